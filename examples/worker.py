"""A demo worker: a child run of the supervisor that claims and finishes two tasks."""

from __future__ import annotations

import sys

import runlog


def main(instance_id: str) -> None:
    runlog.init(role="worker", instance_id=instance_id, version="demo")
    for task_id in (1, 2):
        runlog.log_event("task.claimed", {"task_id": task_id})
        runlog.log_event("task.completed", {"task_id": task_id})


if __name__ == "__main__":
    main(sys.argv[1])

"""The supervisor: queues a batch of tasks, keeps workers on it, promotes a revision when done.

What it shows of runlog:

* ``runlog.init(role="supervisor")`` makes this process a root run; every worker it
  starts with plain ``subprocess`` is a child run, because the child inherits
  ``PARENT_RUN_ID``.
* ``runlog.state`` answers the supervisor's questions from the ``events`` table: the
  current good revision (read at start, so it survives supervisor restarts), the next
  ``worker_instance_seq``, and why a worker exited (its own ``process.exited``).
* ``worker.spawned``, ``worker.crashed`` and ``revision.promoted`` are logged with
  ``log_event``; the batch is one ``batch`` span around all of it.

Model endpoint: with ``OPENAI_API_KEY`` set, the workers call the OpenAI API (or the
OpenAI-compatible server ``OPENAI_BASE_URL`` names); without it, the supervisor starts
runlog's stand-in server on 127.0.0.1, so everything works offline.  ``--provider``
(default ``$DEMO_PROVIDER``, else ``openai``) picks the workers' provider:
``anthropic`` (``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``, the stand-in serves
Anthropic's Messages API too), or ``mixed``: odd workers OpenAI, even ones Anthropic,
so ``runlog stats`` shows both models and their cost.

Run it from the repository root (``make demo`` runs it through examples/demo.py)::

    python examples/supervisor.py --workers 3 --tasks 8 --crash-task 3
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import runlog

from tasks import APP_VERSION, TaskQueue

WORKER_SCRIPT = Path(__file__).resolve().with_name("worker.py")

QUESTIONS = [
    "I was charged twice for my March invoice. Can you refund one of the charges?",
    "My website has returned 502 errors since this morning. What should I check first?",
    "How do I add a second administrator to our account?",
    "Can I move my domain to another provider without downtime?",
    "Why did my backup job fail with 'disk quota exceeded'?",
    "Do you offer a discount for annual billing?",
    "How do I reset two-factor authentication after losing my phone?",
    "Is there an API to list all DNS records of a zone?",
]

# How the stand-in answers: several chunks with small delays, so streams and time to
# first token show in the recorded events (see `python -m runlog_openai.standin -h`).
STANDIN_BEHAVIOUR = {
    "reply": "Thanks for reaching out! Here is what we suggest for your case.",
    "chunks": 6,
    "delay": 0.3,
    "chunk-delay": 0.08,
    "input-tokens": 42,
    "output-tokens": 14,
    "cached-input-tokens": 16,  # OpenAI: 16 of the 42 cached; Anthropic: 16 cache reads
}
KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def say(message: str) -> None:
    """Print a progress line at once: workers write to the same terminal or pipe."""
    print(f"supervisor: {message}", flush=True)


def providers(choice: str) -> list[str]:
    """The providers the workers of ``--provider`` use."""
    return ["openai", "anthropic"] if choice == "mixed" else [choice]


@contextmanager
def llm_endpoint(choice: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Where the workers send model calls: a description, and the env they need for it."""
    if all(os.environ.get(KEYS[name]) for name in providers(choice)):
        yield os.environ.get("OPENAI_BASE_URL", f"the {choice} API"), {}
        return
    from runlog_openai.standin import API_KEY

    options = [part for name, value in STANDIN_BEHAVIOUR.items() for part in (f"--{name}", value)]
    server = subprocess.Popen(
        [sys.executable, "-m", "runlog_openai.standin", "--port", "0", *map(str, options)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    try:
        base_url = server.stdout.readline().strip()  # the server prints its URL first
        if not base_url:
            raise RuntimeError(f"the stand-in server exited ({server.wait()}) before serving")
        llm_env = {
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": API_KEY,
            "ANTHROPIC_BASE_URL": base_url.removesuffix("/v1"),
            "ANTHROPIC_API_KEY": API_KEY,
        }
        yield f"stand-in server at {base_url}", llm_env
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()


@dataclass
class Worker:
    """One worker process the supervisor started."""

    instance_id: str
    seq: int
    proc: subprocess.Popen[bytes]


class WorkerPool:
    """The supervisor's worker processes; their exits arrive on a queue, in order."""

    def __init__(self, command: list[str], env: dict[str, str], provider: list[str]) -> None:
        self.live: dict[str, Worker] = {}
        self._command = command
        self._provider = provider
        self._env = env
        self._exits: queue.Queue[Worker] = queue.Queue()

    def spawn(self, replaces: str | None = None) -> Worker:
        """Start the next worker, numbered without waiting for the previous one to start.

        ``next_worker_instance_seq()`` counts the workers already started plus the one
        this supervisor spawned last (its ``worker.spawned`` event), so workers
        spawned back to back get distinct numbers.
        """
        seq = runlog.state.next_worker_instance_seq()
        instance_id = f"worker-{seq}"
        provider = self._provider[(seq - 1) % len(self._provider)]
        command = [*self._command, "--instance-id", instance_id, "--provider", provider]
        proc = subprocess.Popen(command, env=self._env)
        worker = Worker(instance_id, seq, proc)
        self.live[instance_id] = worker
        runlog.log_event(
            "worker.spawned",
            {
                "pid": proc.pid,
                "instance_id": instance_id,
                "worker_instance_seq": seq,
                "replaces": replaces,
                "provider": provider,
            },
        )
        threading.Thread(target=self._watch, args=(worker,), daemon=True).start()
        return worker

    def _watch(self, worker: Worker) -> None:
        worker.proc.wait()
        self._exits.put(worker)

    def next_exit(self, timeout: float) -> Worker:
        """The next worker to exit; ``TimeoutError`` if none does within ``timeout`` seconds."""
        try:
            worker = self._exits.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"no worker finished within {timeout:.0f}s") from None
        del self.live[worker.instance_id]
        return worker

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the workers still running (when the supervisor fails or is interrupted)."""
        for worker in self.live.values():
            worker.proc.terminate()
        for worker in self.live.values():
            worker.proc.wait(timeout=30)


def exit_reason(instance_id: str) -> dict[str, Any]:
    """Why a worker exited, from its own ``process.exited`` event (empty if it logged none)."""
    started = runlog.state.latest_event(
        "process.started", parent_run_id=runlog.current_run_id(), instance_id=instance_id
    )
    if started is None:
        return {}
    exited = runlog.state.latest_payload("process.exited", run_id=started.run_id)
    if exited is None:
        return {}
    return {key: exited[key] for key in ("reason", "error_type", "error") if key in exited}


def supervise(pool: WorkerPool, tasks: TaskQueue, batch: int, args: argparse.Namespace) -> None:
    """Wait for the workers; re-queue a crashed worker's tasks and start a replacement."""
    deadline = time.monotonic() + args.timeout
    restarts = 0
    while pool.live:
        worker = pool.next_exit(deadline - time.monotonic())
        code = worker.proc.returncode
        if code == 0:
            continue
        requeued = tasks.requeue(batch, worker.instance_id)
        reason = exit_reason(worker.instance_id)
        runlog.log_event(
            "worker.crashed",
            {
                "pid": worker.proc.pid,
                "instance_id": worker.instance_id,
                "exit_code": code,
                "requeued_task_ids": requeued,
                **reason,
            },
        )
        why = reason.get("error_type") or reason.get("reason", "unknown reason")
        say(f"{worker.instance_id} died ({why}); re-queued tasks {requeued}")
        # Replace a worker that died holding tasks (or the last one, if work is left).
        needed = bool(requeued) or (not pool.live and tasks.unfinished(batch) > 0)
        if needed and restarts < args.max_restarts:
            restarts += 1
            replacement = pool.spawn(replaces=worker.instance_id)
            say(f"started {replacement.instance_id} to replace {worker.instance_id}")


def promote(good: Any, tasks: TaskQueue, batch: int) -> int:
    """Log ``revision.promoted`` with the revision after ``good``, if every task was done."""
    left = tasks.unfinished(batch)
    if left:
        raise RuntimeError(f"batch {batch}: {left} task(s) unfinished; not promoting")
    revision = good + 1 if isinstance(good, int) else 1  # revisions are integers, 1 first
    runlog.log_event("revision.promoted", {"revision": revision, "previous": good, "batch": batch})
    return revision


def worker_command(args: argparse.Namespace, batch: int, task_ids: list[int]) -> list[str]:
    """How to start a worker on ``batch`` (the pool adds ``--instance-id``)."""
    command = [sys.executable, str(WORKER_SCRIPT), "--batch", str(batch), "--model", args.model]
    command += ["--anthropic-model", args.anthropic_model]
    command += ["--tasks-db", str(args.tasks_db.resolve())]
    if args.crash_task is not None:
        command += ["--crash-on-task", str(task_ids[args.crash_task - 1])]
    return command


def stop_on_sigterm() -> None:
    """Leave through SystemExit on SIGTERM, so the workers and the stand-in are stopped too.

    Installed before ``runlog.init()``, which keeps the handler and calls it after noting
    the signal (``process.exited`` then says ``reason: "signal"``).
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one batch to the end; promote a new revision if every task was done."""
    args = _parse_args(argv)
    stop_on_sigterm()
    run_id = runlog.init(role="supervisor", instance_id="supervisor", version=APP_VERSION)
    good = runlog.state.current_good_rev()
    say(f"run {run_id}, good revision read back from the events table: {good}")

    with TaskQueue(args.tasks_db) as tasks, llm_endpoint(args.provider) as (endpoint, llm_env):
        prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.tasks)]
        batch, task_ids = tasks.create_batch(prompts, created_by=f"supervisor run {run_id}")
        runlog.log_event("batch.created", {"batch": batch, "task_ids": task_ids})
        say(f"batch {batch}, {len(task_ids)} tasks, model calls go to {endpoint}")
        if args.crash_task is not None:
            say(f"task {task_ids[args.crash_task - 1]} will crash its worker")
        # child_env: a copy of the environment with PARENT_RUN_ID set to this run.
        env = runlog.child_env({**os.environ, **llm_env})
        with runlog.span("batch", batch=batch, tasks=len(task_ids), model=args.model):
            command = worker_command(args, batch, task_ids)
            with WorkerPool(command, env, providers(args.provider)) as pool:
                for _ in range(args.workers):
                    pool.spawn()
                supervise(pool, tasks, batch, args)
            revision = promote(good, tasks, batch)
    workers = runlog.state.worker_instance_seq()
    say(f"promoted revision {revision}; this run started {workers} workers")
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a batch of tasks on worker processes.")
    parser.add_argument("--workers", type=int, default=3, help="workers to start (3)")
    parser.add_argument("--tasks", type=int, default=8, help="tasks in the batch (8)")
    parser.add_argument(
        "--model",
        default=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        help="chat model (default: $OPENAI_MODEL, else gpt-4o-mini)",
    )
    parser.add_argument(
        "--provider",
        choices=["openai", "anthropic", "mixed"],
        default=os.environ.get("DEMO_PROVIDER") or "openai",
        help="the workers' provider; mixed: odd workers OpenAI, even ones Anthropic "
        "(default: $DEMO_PROVIDER, else openai)",
    )
    parser.add_argument(
        "--anthropic-model",
        default=os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5"),
        help="Anthropic model (default: $ANTHROPIC_MODEL, else claude-haiku-4-5)",
    )
    parser.add_argument(
        "--crash-task",
        type=int,
        metavar="N",
        help="make the worker that first takes the batch's N-th task die half-way through it",
    )
    parser.add_argument("--max-restarts", type=int, default=3, help="replacement workers (3)")
    parser.add_argument("--tasks-db", type=Path, default=Path("tasks.db"), help="queue file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the batch")
    args = parser.parse_args(argv)
    if args.crash_task is not None and not 1 <= args.crash_task <= args.tasks:
        parser.error(f"--crash-task must be between 1 and --tasks ({args.tasks})")
    return args


if __name__ == "__main__":
    raise SystemExit(main())

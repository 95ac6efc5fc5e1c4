"""Is the process of a run that never logged ``process.exited`` still there?

A run without ``process.exited`` is either still running or *lost*: killed by SIGKILL,
the OOM killer or a power cut, before it could say so.  Only this machine's processes
can be checked, so the answer is:

* ``running``: the run's ``host`` is this machine and its ``pid`` is a live process
  that started before the run did;
* ``lost``: same host, and the pid is gone, a zombie, or belongs to a process that
  started after the run (the pid was reused; checked on Linux through
  ``/proc/<pid>/stat``, elsewhere a reused pid reads as running);
* ``unknown``: the run was logged on another host (a PostgreSQL database shared by
  several machines), or it carries no host or pid.

Hosts are compared by name (``socket.gethostname()``); two containers that share a
hostname but not a pid namespace will give wrong answers.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

Liveness = Literal["running", "lost", "unknown"]

_PROC = "/proc"
_SLACK_S = 1.5
"""Boot time in ``/proc/stat`` is whole seconds; a live process's start may read late."""


def liveness(host: Any, pid: Any, started_ns: int) -> tuple[Liveness, str | None]:
    """The state of the process ``pid`` on ``host`` whose run began at ``started_ns``;
    with a note explaining anything but a plain answer."""
    if not isinstance(host, str) or not isinstance(pid, int) or pid <= 0:
        return "unknown", "the run has no host or pid to check"
    if host != socket.gethostname():
        return "unknown", f"logged on host {host}; only this host's processes can be checked"
    if not _exists(pid):
        return "lost", "no process.exited and the process is gone"
    started = _start_time(pid)
    if started == "zombie":
        return "lost", "no process.exited and the process is a zombie"
    if started is not None and started > started_ns / 1e9 + _SLACK_S:
        return "lost", f"no process.exited; pid {pid} now belongs to a newer process"
    return "running", None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it exists
    return True


def _start_time(pid: int) -> float | Literal["zombie"] | None:
    """When ``pid`` started (Unix seconds), "zombie", or None where /proc cannot say."""
    try:
        with open(f"{_PROC}/{pid}/stat") as f:
            stat = f.read()
        with open(f"{_PROC}/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        # The fields after the command name, which is in parentheses and may hold anything.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z":
            return "zombie"
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None


__all__ = ["Liveness", "liveness"]

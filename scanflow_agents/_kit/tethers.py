"""Child processes that cannot outlive their parent, not even one killed with SIGKILL.

A server or a model replica that we start belongs to the process that started it.
When that process ends normally it stops its children; when it is killed with
SIGKILL (an OOM kill, a CI runner's timeout, a ``kill -9`` in a test) nothing of
it runs any more, and without help its children would run on for ever, holding
ports and files. Two helpers close that gap:

- :func:`die_with_parent`, for a single process that starts nothing of its own (the
  nats-server): a ``preexec_fn`` asking Linux to send it SIGTERM when its parent dies.
- :func:`tethered`, for a command that starts processes of its own (``mlflow server``
  starts uvicorn; a training step may start anything): it runs the command under a
  small tether, this file run as a script (standard library only, about 20 ms and
  10 MiB). The tether leads a new process group that its command and every process
  the command starts belong to. It forwards SIGTERM, SIGINT and SIGHUP to that group,
  exits as the command exits (the same code or signal), and when its parent dies,
  stops the whole group: SIGTERM, then SIGKILL after a grace period.

The tether watches its parent by polling ``getppid()`` (four times a second), not
with ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that forked exits,
and servers are often started from a worker thread (``asyncio.to_thread``).

Owners signal the tether's pid (``Popen.terminate()``), not its group: the tether
forwards the signal once. ``os.killpg`` with SIGKILL on the tether's pid still
ends everything at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

#: Seconds the command's group has after SIGTERM, once the parent died, before SIGKILL.
GRACE = 5.0
#: How often the tether looks at its parent.
POLL = 0.25


def die_with_parent() -> None:
    """In a child before exec (``preexec_fn``): on Linux, get SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def tethered(argv: Sequence[str]) -> list[str]:
    """``argv`` run under a tether to this process (see the module's docstring)."""
    return [sys.executable, __file__, str(os.getpid()), "--", *argv]


def _stop_group(child: subprocess.Popen[bytes], grace: float) -> None:
    """The parent is gone: SIGTERM to the group, SIGKILL to what is left after ``grace``."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # The command may be gone and a process it started not: SIGKILL the group, us last.
    os.killpg(group, signal.SIGKILL)


def _main(args: Sequence[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write("usage: tethers.py PARENT_PID -- COMMAND [ARG...]\n")
        return 2
    parent, argv = int(args[0]), list(args[2:])
    # Lead a group of our own, so the group is the command's and nobody else's.
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    if os.getppid() != parent:  # it died before we got here
        return 1
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: FrameType | None) -> None:
        # To the whole group (the command and what it started), not to us again.
        signal.signal(signum, signal.SIG_IGN)
        try:
            os.killpg(os.getpgrp(), signum)
        finally:
            signal.signal(signum, forward)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait(POLL)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                _stop_group(child, GRACE)
                return 1  # not reached: the group's SIGKILL ends us too
    if code < 0:  # end as the command ended, so our parent reads the same signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

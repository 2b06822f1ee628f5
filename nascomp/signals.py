"""SIGINT and SIGTERM in the main job (``nascomp.run``): they raise :class:`Interrupted`, which unwinds
the run (SQLite transactions in flight roll back, evaluations in flight are redone on resume) to one line
on stderr giving the command that resumes it, and exit 130 / 143. Its own module, imported by ``nascomp.run``
and ``nascomp.pipeline`` alike: ``python -m nascomp.run`` runs ``nascomp.run`` as ``__main__``, a second copy of
that module, whose state the pipeline would not see.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that no ``except Exception`` on the way up (and
    not Lightning, which turns KeyboardInterrupt into exit 1 and its own SIGTERM handling into exit 0)
    swallows it; SQLite transactions in flight roll back, evaluations in flight are redone on resume."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def resume_hint(run_dir: str) -> str:
    """The one line that says how to resume: the same command, which finds the run's store."""
    command = " ".join(["python -m nascomp.run", *map(shlex.quote, sys.argv[1:])])
    return f"the run resumes from its store in {run_dir}: {command}"


def on_signals(run_dir: str) -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` (Lightning's Trainer composes its own SIGTERM
    handler with this one while it fits, then puts this one back); a second signal exits at once."""

    def handler(signum, frame):
        global _received
        if _received is not None:
            print(f"error: {signal.Signals(signum).name} again: stopped; {resume_hint(run_dir)}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        _received = signum
        raise Interrupted(signum)

    global _received
    _received = None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


_received: int | None = None  # the signal on_signals' handler took, if any


def check_interrupted() -> None:
    """Raise :class:`Interrupted` again for a signal already taken. Its first raise is lost when the signal
    lands while a finaliser (``__del__``, run by the garbage collector) runs: Python prints "Exception
    ignored" and goes on. The main job calls this at safe points (after each search step, before the run
    is marked finished, after ``run`` returns), so such a signal still stops the run with 130 / 143."""
    if _received is not None:
        raise Interrupted(_received)

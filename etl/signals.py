"""SIGTERM and SIGINT during a run: they roll back what is not committed, and never what is.

:func:`as_exceptions` turns SIGTERM into :class:`Interrupted` (SIGINT is already
``KeyboardInterrupt``), so an uncommitted transaction rolls back and the run records itself
``interrupted``. :func:`deferred` covers a commit and what follows it: a signal arriving there
is logged and otherwise ignored, so a run whose changes committed always finishes as
``succeeded`` and exits 0.

``ETL_TEST_PAUSE=<point>`` is for etl's tests only: at :func:`pause_for_tests` with that point the
process prints ``etl-test: paused at <point>`` on stderr and waits (up to a minute, or until a
signal arrives inside :func:`deferred`), so a test can deliver a signal at a known moment.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from etl.errors import Interrupted

log = logging.getLogger("etl")

PAUSE_VARIABLE = "ETL_TEST_PAUSE"
PAUSE_SECONDS = 60.0
_DEFERRED = (signal.SIGTERM, signal.SIGINT)
_received = threading.Event()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def as_exceptions() -> Iterator[None]:
    """Turns SIGTERM into :class:`Interrupted` so the run rolls back and records itself."""
    if not _main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred() -> Iterator[None]:
    """SIGTERM and SIGINT change nothing inside the block: enter it just before a commit, and
    keep it until the run has finished, so the run's status says its changes committed."""
    if not _main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        _received.set()
        log.warning(
            "%s received after the run's changes were committed; finishing the run",
            signal.Signals(signum).name,
        )

    previous = {signum: signal.signal(signum, on_signal) for signum in _DEFERRED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def pause_for_tests(point: str) -> None:
    """The test-only pause point (see the module's docstring); nothing unless asked for."""
    if os.environ.get(PAUSE_VARIABLE) != point:
        return
    _received.clear()
    print(f"etl-test: paused at {point}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not _received.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)


class AfterCommit:
    """Marks the moment a run commits: :meth:`reached` is called just before the commit, and
    from then until the block ends signals are :func:`deferred`. ``done`` says whether the
    run got there, so that a later failure never records a committed run as failed."""

    def __init__(self) -> None:
        self.done = False
        self._stack = ExitStack()

    def reached(self) -> None:
        """The run is about to commit: defer signals from now on."""
        if not self.done:
            self.done = True
            self._stack.enter_context(deferred())

    def release(self) -> None:
        """Signals act again (``done`` stays): for work after the run, such as delivering
        alerts, that a signal may end without touching the committed run."""
        self._stack.close()

    def __enter__(self) -> AfterCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

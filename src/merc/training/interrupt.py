"""SIGTERM/SIGINT during a long command: a non-zero exit and one line saying what survived.

Without this, Lightning turns SIGTERM into ``SIGTERMException`` -- a ``SystemExit`` *without a
code*, i.e. exit status 0 -- after finishing the current batch, and Ctrl-C into ``sys.exit(1)``
after its own message; a scheduler or an ``&&`` chain took a killed run for a finished one.

:func:`interruptible` installs handlers that raise :class:`Interrupted` (a ``BaseException``, so
neither Lightning's ``except KeyboardInterrupt`` nor library ``except Exception`` blocks swallow
it). Lightning composes its own SIGTERM notifier with the handler it finds installed, so ours
still runs during ``trainer.fit``. Everything merc writes is atomic (:mod:`merc.fileio`), so
whatever is on disk when the exception unwinds is complete; the training loops add which seeds
finished (:attr:`Interrupted.progress`) and ``merc`` prints one line and exits ``128 + signum``
(the shell's convention: 143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(BaseException):
    """The process received SIGTERM/SIGINT; :attr:`progress` says what is complete on disk."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.progress: str | None = None

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}" + (f"; {self.progress}" if self.progress
                                                       else "")


def _raise(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    # Ignore further signals of this kind while unwinding: a second Ctrl-C must not interrupt
    # the clean-up (temporary files are removed on the way out).
    signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Interrupted`; previous handlers are restored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    old = {s: signal.getsignal(s) for s in signals}
    try:
        for s in signals:
            signal.signal(s, _raise)
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

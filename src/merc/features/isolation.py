"""Run crash-prone native code (openSMILE, FFmpeg/OpenCV) in a worker process.

A segfault or an ``abort()`` in a C/C++ extension cannot be caught where it happens: it ends the
process, so ``merc predict`` exits 139 without a word and ``merc serve`` stops answering. The
feature extractors therefore hand their per-file work to an :class:`IsolatedWorker`: a child
Python process that dies in the caller's place. The caller sees the child's pipe close, knows
which item it was working on, and reports that item (:class:`WorkerCrash`); the next call
starts a fresh child.

Design choices, and why:

* **A fresh interpreter, started with** :mod:`subprocess` (``python -c ...``), not a fork:
  forking a process that already runs torch or OpenMP threads can deadlock the child. Not
  :class:`concurrent.futures.ProcessPoolExecutor` with the 'spawn' context either: spawn
  re-imports the caller's ``__main__`` in the worker, so every user script without an ``if
  __name__ == "__main__":`` guard (the README's Python example has none) would re-run itself in
  the worker and fail, and a guarded one would still pay its imports again. The child imports
  only what its tasks need (the caller's ``sys.path`` is handed over first).
* **Pickle over the child's stdin/stdout**, one message per chunk of items one way and one per
  item the other way (:mod:`pickle` streams delimit themselves). The child moves its own stdout
  to stderr first, so a native library printing to stdout cannot corrupt the stream; its stderr
  is the caller's (a native error message still reaches the terminal).
* **Persistent, lazy and shared.** The child starts on first use and is kept: a server pays
  its start-up (an interpreter plus the extractor's imports, ~2 s for openSMILE) once, not per
  request; each later call costs a few pipe round trips. Extractors of one kind alive at the
  same time share one child (:func:`shared_worker`): its state is keyed by settings, and a new
  extractor per call (``build_features``, a bench) does not pay a new start-up while another
  one lives. The child ends when the last of them is garbage-collected, at exit, or on
  :meth:`IsolatedWorker.close`.
* **Chunks out, items back, in order.** Items go ``chunk_size`` at a time, two chunks ahead, so
  the child never waits for the caller; each result comes back as soon as it is computed, so the
  progress bar moves per file and the item in progress when the pipe closes is exactly the one
  being worked on. Results are handed on strictly in input order: the first bad file reported
  is the first in the input, as when everything ran in one process.
* **Blame where it is due.** A child that ends by itself while working on an item (a signal
  of its own making: SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL; or an exit) was ended by that
  item. A child killed from outside (SIGKILL from the out-of-memory killer or an operator,
  SIGTERM) may have been killed for no fault of the item: the item is run once more, alone, in
  a fresh child, and reported only if it dies again.
* **State per child.** :func:`worker_state` builds a task's heavy object (an ``opensmile.Smile``,
  a CNN) once per process and keeps it, keyed by the arguments that define it.

Tasks are module-level functions (pickled by reference), called once per item; a failure that
is not a crash (an unreadable file) should be returned as a result: an exception raised by a
task is a bug and comes back as :class:`RuntimeError` with the child's traceback (an exception
object cannot always be rebuilt: :class:`~merc.errors.MercInputError` cannot be unpickled).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

_STATE: dict[Hashable, Any] = {}
_STATE_LOCK = threading.Lock()


def worker_state(factory: Callable[..., Any], *args: Hashable) -> Any:
    """``factory(*args)``, built once per process and kept (keyed by the factory and ``args``).

    In a worker this is the extractor's heavy object, built by its first task; in the calling
    process (``isolate=False``) it is shared by the extractors with the same settings.
    """
    key = (factory.__module__, factory.__qualname__, args)
    with _STATE_LOCK:
        if key not in _STATE:
            _STATE[key] = factory(*args)
        return _STATE[key]


_SELF_INFLICTED = frozenset({"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS",
                             "SIGTRAP"})
"""Signals a process gets from its own faults (or ``abort()``), not from another process."""


class WorkerCrash(Exception):
    """Item ``index`` of :meth:`IsolatedWorker.map` ended the worker process (a crash in native
    code, an ``abort()``, an exit; or, twice in a row, a kill from outside); ``how`` says how
    it ended (``"SIGSEGV"``, ``"exit code 1"``)."""

    def __init__(self, index: int, how: str) -> None:
        super().__init__(f"item {index} killed the worker process ({how})")
        self.index, self.how = index, how


class WorkerStartError(RuntimeError):
    """The worker process died before it could run anything: not the fault of any input."""


class _Died(Exception):
    """The worker's pipe closed (internal)."""


def _noop() -> None:
    return None


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


class _Child:
    """One worker process and the number of results it still owes (those of a map that stopped
    early, read and dropped before the next call)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from merc.features.isolation import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.owed = 0
        # A process forked from the owner (a DataLoader worker) inherits this object: it must
        # neither talk to nor end the owner's child.
        self.owner = os.getpid()

    def send(self, fn: Callable[[Any], Any], items: list) -> None:
        """Queue ``fn`` over ``items``; a closed pipe is left for :meth:`receive` to report."""
        blob = pickle.dumps((fn, items), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            pickle.dump((len(items), blob), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except OSError:         # BrokenPipeError: the child is gone; receive() says so
            pass
        self.owed += len(items)

    def receive(self) -> tuple[bool, Any]:
        """The next ``(ok, result or traceback text)``.

        Raises:
            _Died: the child's pipe closed.
        """
        try:
            reply = pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            raise _Died() from None
        self.owed -= 1
        return reply

    def how_it_ended(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "pipe closed"
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"


def _stop(holder: list) -> None:
    """End the child in ``holder`` (if any): an idle one exits when its stdin closes, a busy one
    (it owes results) is killed rather than waited for."""
    child, holder[0] = holder[0], None
    if child is None or child.owner != os.getpid():
        return
    proc = child.proc
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        if child.owed:
            proc.kill()
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        proc.stdout.close()


class IsolatedWorker:
    """A lazily started, persistent worker process, restarted after it dies.

    Args:
        name: What runs in it, for messages (``"openSMILE"``).

    One call at a time: :meth:`map` and :meth:`start` hold a lock (a server's concurrent
    requests queue behind it, as they do behind its model lock).
    """

    isolated = True

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.RLock()
        # A one-element holder, so that the finalizer (which must not reference self) ends
        # whichever child is current when the worker is garbage-collected or at exit.
        self._holder: list[_Child | None] = [None]
        weakref.finalize(self, _stop, self._holder)

    def __repr__(self) -> str:
        state = "running" if self._holder[0] is not None else "not started"
        return f"IsolatedWorker({self.name!r}, {state})"

    def start(self) -> None:
        """Start the worker if it is not running (and wait until it answers).

        Raises:
            WorkerStartError: the worker died before it answered.
        """
        with self._lock:
            self._ensure()

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run in the worker (a picklable function without arguments).

        Raises:
            WorkerCrash: it ended the worker (``index`` 0).
            RuntimeError: it raised; the message holds the worker's traceback.
        """
        out: list = []
        self.map(_call, [fn], chunk_size=1, on_result=lambda _, value: out.append(value))
        return out[0]

    def close(self) -> None:
        """End the worker process; the next call starts a new one."""
        with self._lock:
            _stop(self._holder)

    def _ensure(self) -> _Child:
        child = self._holder[0]
        if child is not None and child.owner != os.getpid():
            child = self._holder[0] = None       # a fork's copy: the child is the owner's
        if child is not None:
            try:
                while child.owed:           # results of a map that stopped early
                    child.receive()
                return child
            except _Died:
                _stop(self._holder)
        try:
            child = self._holder[0] = _Child()
        except OSError as e:
            raise WorkerStartError(f"cannot start the {self.name} worker process "
                                   f"({sys.executable}: {e})") from None
        try:
            pickle.dump(list(sys.path), child.proc.stdin)
            child.send(_call, [_noop])
            ok, value = child.receive()
        except (_Died, OSError):
            how = child.how_it_ended()
            _stop(self._holder)
            raise WorkerStartError(f"the {self.name} worker process ended ({how}) while "
                                   "starting, before it was given any file; its own error, "
                                   "if any, is above") from None
        if not ok:
            _stop(self._holder)
            raise WorkerStartError(f"the {self.name} worker could not start: {value}")
        return child

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, chunk_size: int,
            on_result: Callable[[int, Any], None]) -> None:
        """Call ``fn(item)`` for every item in the worker and ``on_result(index, result)`` here,
        in input order.

        An exception raised by ``on_result`` stops the map and propagates (the worker's
        remaining results of the chunks already sent are dropped before the next call).

        Raises:
            WorkerCrash: item ``index`` ended the worker (see :class:`WorkerCrash`); the next
                call starts a new one.
            WorkerStartError: a new worker died before running anything.
            RuntimeError: ``fn`` raised (a bug: failures should be results); the message holds
                the worker's traceback.
        """
        chunk_size = max(1, int(chunk_size))
        with self._lock:
            done = 0                             # results handed to on_result so far
            while done < len(items):
                child = self._ensure()
                sent = done                      # items sent to this child so far
                bounds: list[int] = []           # where each chunk sent ends

                def send_next() -> None:
                    nonlocal sent
                    if sent < len(items):
                        end = min(sent + chunk_size, len(items))
                        child.send(fn, [items[i] for i in range(sent, end)])
                        bounds.append(end)
                        sent = end

                send_next()
                send_next()                      # one chunk ahead: the child never waits
                try:
                    while done < len(items):
                        ok, value = child.receive()
                        if not ok:
                            raise RuntimeError(f"{self.name} worker, item {done}: {value}")
                        on_result(done, value)
                        done += 1
                        if done == bounds[0]:
                            bounds.pop(0)
                            send_next()
                except _Died:
                    how = child.how_it_ended()
                    # Not restarted now: a process that exits on this error would only wait
                    # for a worker it never uses; the next call starts one.
                    _stop(self._holder)
                    if how in _SELF_INFLICTED or how.startswith("exit code"):
                        raise WorkerCrash(done, how) from None
                    self._confirm(fn, items, done, on_result)
                    done += 1

    def _confirm(self, fn, items, index: int, on_result) -> None:
        """Rerun item ``index``, in progress when its worker was killed from outside, alone in
        a fresh worker: raise :class:`WorkerCrash` if that one dies too, else hand its result
        on."""
        child = self._ensure()
        child.send(fn, [items[index]])
        try:
            ok, value = child.receive()
        except _Died:
            how = child.how_it_ended()
            _stop(self._holder)
            raise WorkerCrash(index, how) from None
        if not ok:
            raise RuntimeError(f"{self.name} worker, item {index}: {value}")
        on_result(index, value)


class InlineWorker:
    """:class:`IsolatedWorker`'s interface, run in the calling process (``isolate=False``): no
    protection from crashes, no start-up cost; for debugging and for measuring the worker's
    overhead."""

    isolated = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"InlineWorker({self.name!r})"

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def call(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, chunk_size: int,
            on_result: Callable[[int, Any], None]) -> None:
        for i, item in enumerate(items):
            on_result(i, fn(item))


_SHARED: weakref.WeakValueDictionary[str, IsolatedWorker] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_worker(name: str) -> IsolatedWorker:
    """The live :class:`IsolatedWorker` called ``name``, or a new one: extractors of one kind
    alive at the same time share a worker process (module docstring)."""
    with _SHARED_LOCK:
        worker = _SHARED.get(name)
        if worker is None:
            worker = _SHARED[name] = IsolatedWorker(name)
        return worker


def make_worker(name: str, *, isolate: bool) -> IsolatedWorker | InlineWorker:
    """:func:`shared_worker` (``isolate``) or an :class:`InlineWorker`."""
    return shared_worker(name) if isolate else InlineWorker(name)


def _serve() -> None:
    """The worker's main loop (``python -c "from merc.features.isolation import _serve;
    _serve()"``): read ``(n, pickled (fn, items))`` messages from stdin, write one ``(ok, result
    or traceback)`` per item to stdout, until stdin closes."""
    import traceback

    # Ctrl-C in a terminal reaches the whole process group: the caller handles it and ends
    # this process, which must not die first (its death would read as a crash on a file).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    # Anything else written to fd 1 (a native library's printf) goes to stderr, never into the
    # replies; nothing reads fd 0 but us.
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.path[:] = pickle.load(requests)

    def reply(ok: bool, value: Any) -> None:
        try:
            data = pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:                 # an unpicklable result: a bug, reported as one
            data = pickle.dumps((False, traceback.format_exc(limit=-3).strip()))
        replies.write(data)
        replies.flush()

    while True:
        try:
            n, blob = pickle.load(requests)
        except Exception:     # EOF: the caller is done (or gone); garbage: it was interrupted
            return
        try:
            fn, items = pickle.loads(blob)
        except Exception:                 # e.g. the task's module cannot be imported here
            error = traceback.format_exc(limit=-3).strip()
            for _ in range(n):
                reply(False, error)
            continue
        for item in items:
            try:
                result = fn(item)
            except Exception:
                reply(False, traceback.format_exc(limit=-3).strip())
            else:
                reply(True, result)

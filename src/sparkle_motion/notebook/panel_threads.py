"""The control panel's two background threads: the action worker and the status poller.

Nothing a button callback does may block the kernel's shell thread: actions run
in order on one daemon worker thread, and ``/status`` is polled by a cancellable
daemon thread whose interval the user can change while it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import Queue

__all__ = ["ActionWorker", "Poller"]


class ActionWorker:
    """One daemon thread running submitted actions in order (never blocks the kernel's shell thread)."""

    def __init__(self, name: str) -> None:
        self._queue: Queue[tuple[Callable[[], None], Future[None]] | None] = Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, future = item
            if future.set_running_or_notify_cancel():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - the action already reported it; keep the future honest
                    future.set_exception(exc)
                else:
                    future.set_result(None)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((fn, future))
        return future

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self) -> None:
        self._queue.put(None)


class Poller:
    """Calls ``tick()`` on a daemon thread every ``interval()`` seconds until it returns True or ``stop()``.

    The interval is read before every wait, so a changed setting applies from the
    next wait on; ``stop()`` ends the wait in progress at once. An exception that
    escapes ``tick`` goes to ``on_crash`` (a poller must say why it ended, not
    vanish); ``on_exit`` runs on the thread whenever the loop ends.
    """

    def __init__(self, tick: Callable[[], bool], interval: Callable[[], float], *,
                 on_crash: Callable[[BaseException], None], on_exit: Callable[[], None], name: str) -> None:
        self._tick, self._interval = tick, interval
        self._on_crash, self._on_exit = on_crash, on_exit
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def start(self, join_timeout: float) -> bool:
        """Start polling; False when it already runs. A poller that is still stopping is let finish first."""
        previous = self._thread
        if previous is not None and previous.is_alive():
            if not self._stop.is_set():
                return False
            if previous is not threading.current_thread():
                # Outside the lock: the stopping poller's last update may need the caller's locks.
                previous.join(timeout=join_timeout)
        with self._lock:
            if self.running:
                return False
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop,), name=self._name, daemon=True)
            self._thread.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and wait up to ``timeout`` s for the thread (not when called from the poller itself)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def _loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if self._tick():
                    break
                stop.wait(self._interval())
        except Exception as exc:  # noqa: BLE001 - reported by on_crash
            self._on_crash(exc)
        finally:
            stop.set()
            self._on_exit()

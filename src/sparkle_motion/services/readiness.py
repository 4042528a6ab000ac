"""Readiness: whether a service can take requests yet, as ``/ready`` and ``/invoke`` report it.

A tool's backend warms up in a thread after the server starts, so ``/health``
answers at once while ``/ready`` says 503 (with a ``Retry-After``) until the
load finished — or failed, which a client must be able to tell apart from
"still loading".
"""

from __future__ import annotations

import threading
from typing import Any

from sparkle_motion.errors import NotReadyError, SparkleError

NOT_READY_RETRY_AFTER_S = 2.0
LOAD_FAILED_RETRY_AFTER_S = 30.0


class Readiness:
    """Thread-safe readiness state behind ``/ready``: loading → ready | failed, then stopping."""

    LOADING, READY, FAILED, STOPPING = "loading", "ready", "failed", "stopping"

    def __init__(self, state: str = READY) -> None:
        self._lock = threading.Lock()
        self._state = state
        self._cause: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def mark_loading(self) -> None:
        self._set(self.LOADING, None)

    def mark_ready(self) -> None:
        self._set(self.READY, None)

    def mark_failed(self, exc: BaseException) -> None:
        cause = {"exception_type": type(exc).__name__, "exception_message": str(exc)}
        if isinstance(exc, SparkleError):
            cause["code"] = exc.code
        self._set(self.FAILED, cause)

    def mark_stopping(self) -> None:
        self._set(self.STOPPING, None)

    def _set(self, state: str, cause: dict[str, Any] | None) -> None:
        with self._lock:
            if self._state == self.STOPPING:
                return  # shutting down is final
            self._state, self._cause = state, cause

    def check(self) -> None:
        """Raise the NotReadyError a request should get, or return when ready."""
        with self._lock:
            state, cause = self._state, self._cause
        if state == self.READY:
            return
        if state == self.LOADING:
            raise NotReadyError("service is warming up (backend load() still running)",
                                retry_after=NOT_READY_RETRY_AFTER_S, context={"state": state})
        if state == self.FAILED:
            assert cause is not None
            raise NotReadyError(f"backend failed to load: {cause['exception_type']}: {cause['exception_message']}",
                                code="load_failed", retry_after=LOAD_FAILED_RETRY_AFTER_S,
                                context={"state": state, **cause})
        raise NotReadyError("service is shutting down", code="shutting_down",
                            retry_after=NOT_READY_RETRY_AFTER_S, context={"state": state})

"""Typed errors shared by every layer of Sparkle Motion.

Every error carries a stable machine-readable ``code``, the HTTP status a service
answers with, an optional ``field`` (the JSON path of the offending input) and a
``context`` dict.  The service framework turns any :class:`SparkleError` into the
JSON error body ``{"error": {...}, "request_id": ...}``; nothing else is needed to
map errors to HTTP.
"""

from __future__ import annotations

from typing import Any


class SparkleError(Exception):
    """Base class: a typed error with a stable code and context."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
        context: dict[str, Any] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.context = dict(context or {})
        self.details = list(details or [])

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        if self.context:
            body["context"] = self.context
        return body

    def __str__(self) -> str:  # "field: message" reads best in CLI output and logs
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInputError(SparkleError):
    """The caller sent something we will not process (HTTP 422)."""

    code = "invalid_input"
    http_status = 422


class ConflictError(SparkleError):
    """The request is well formed but collides with the current state, e.g. of a run (HTTP 409).

    Call sites pass their own ``code`` (``run_active``, ``invalid_state``...), so
    clients can tell the conflicts apart.
    """

    code = "conflict"
    http_status = 409


class PlanValidationError(InvalidInputError):
    """A MoviePlan broke one or more rules; ``details`` lists every violation."""

    code = "plan_invalid"


class ContentPolicyError(InvalidInputError):
    """A plan's text names a term the content policy blocks (``configs/qa_policy.yaml``).

    ``field`` is the JSON path of the first offending field; ``details`` lists
    every hit as ``{path, rule, message}`` (rule ``text_policy.<category>``).
    """

    code = "content_policy"


class PayloadTooLargeError(SparkleError):
    code = "payload_too_large"
    http_status = 413


class UnauthorizedError(SparkleError):
    code = "unauthorized"
    http_status = 401


class NotFoundError(SparkleError):
    code = "not_found"
    http_status = 404


class ArtifactNotFoundError(NotFoundError):
    code = "artifact_not_found"


class PathEscapeError(InvalidInputError):
    """A URI or path tried to leave the artifact root."""

    code = "path_escape"


class IntegrityError(SparkleError):
    """Stored bytes no longer match their recorded checksum."""

    code = "integrity_error"
    http_status = 500


class ServiceBusyError(SparkleError):
    """The service (or its device) is busy; retry after ``retry_after`` seconds."""

    code = "busy"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 5.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class NotReadyError(ServiceBusyError):
    code = "not_ready"


class BackendError(SparkleError):
    """The backend failed while doing real work; ``context`` holds the cause."""

    code = "backend_error"
    http_status = 500


class ConfigError(SparkleError):
    code = "config_error"
    http_status = 500


class ToolCallError(SparkleError):
    """A call to another FunctionTool failed (raised by the HTTP ToolClient)."""

    code = "tool_call_failed"
    http_status = 502

    def __init__(self, message: str, *, tool_id: str, status: int | None = None,
                 remote_error: dict[str, Any] | None = None, **kw: Any) -> None:
        context = {"tool_id": tool_id, "status": status}
        context.update(kw.pop("context", {}) or {})
        super().__init__(message, context=context, **kw)
        self.tool_id = tool_id
        self.status = status
        self.remote_error = remote_error or {}


class DiskFullError(SparkleError):
    """The volume under ``SPARKLE_HOME`` is full (HTTP 507 Insufficient Storage).

    ``context`` names the store-relative ``path`` that could not be written and
    the ``free_bytes`` left, so the message says what to free and where; a run
    that fails with it can be resumed once space is freed.
    """

    code = "disk_full"
    http_status = 507


class Cancelled(SparkleError):
    """The work was cancelled before it finished: its caller went away, or a cancel was asked for.

    Raised by ``ToolContext.check_cancelled()`` at the next step of a backend's
    loop; nobody is waiting for the answer of a disconnected call, so the status
    only matters to a job's record (409: the work no longer exists to finish).
    """

    code = "cancelled"
    http_status = 409

"""The control panel's message pane: what an action reports, and how an error becomes a message.

Every endpoint error is shown with the endpoint (method and full URL), the HTTP
status and the remote error's code, message, field and details, so a user sees
what the service said, not a wrapper's summary of it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from sparkle_motion.errors import SparkleError, ToolCallError
from sparkle_motion.logs import get_logger

__all__ = ["MESSAGES_SHOWN", "PanelActionError", "PanelMessage", "message_for", "messages_html"]

MESSAGES_SHOWN = 6

log = get_logger("sparkle_motion.notebook")


class PanelActionError(SparkleError):
    """A panel action failed or was refused; raised by the headless helpers, shown otherwise."""

    code = "panel_action_failed"
    http_status = 500


class PanelMessage(BaseModel):
    """One line of the panel's message pane: an endpoint error, a refused click or a note."""

    level: str  # "error" | "info"
    action: str
    message: str
    endpoint: str | None = None
    status: int | None = None
    code: str | None = None
    field: str | None = None
    details: list[dict[str, Any]] = Field(default_factory=list)
    at: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%H:%M:%S"))

    def text(self) -> str:
        where = f"{self.endpoint} → " if self.endpoint else ""
        status = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        field = f"[{self.field}] " if self.field else ""
        return f"{self.action}: {where}{status}{code}{field}{self.message}"


def message_for(action: str, exc: BaseException) -> PanelMessage:
    """The error message ``action`` shows for ``exc``: a call's endpoint and remote error, or a typed error."""
    if isinstance(exc, ToolCallError):
        # The clients put the failed call's "METHOD url" into the error's context.
        remote = exc.remote_error or {}
        return PanelMessage(level="error", action=action, endpoint=exc.context.get("endpoint"), status=exc.status,
                            code=remote.get("code") or exc.code, message=remote.get("message") or exc.message,
                            field=remote.get("field") or exc.field, details=remote.get("details") or exc.details)
    if isinstance(exc, SparkleError):
        return PanelMessage(level="error", action=action, code=exc.code, message=exc.message, field=exc.field,
                            details=exc.details)
    # A bug in the panel or an unexpected library error: shown in full, never swallowed.
    log.exception("panel_action_crashed", action=action)
    return PanelMessage(level="error", action=action, code="internal_error", message=f"{type(exc).__name__}: {exc}")


def messages_html(messages: Sequence[PanelMessage]) -> str:
    """The newest ``MESSAGES_SHOWN`` messages, newest first, each error with its details listed."""
    items = []
    for m in messages[-MESSAGES_SHOWN:][::-1]:
        color = "#b91c1c" if m.level == "error" else "#374151"
        details = "".join(f"<li><code>{html.escape(str(d.get('path') or d.get('field') or '$'))}</code>: "
                          f"{html.escape(str(d.get('message', d)))}</li>" for d in m.details[:20])
        items.append(f"<div style='color:{color}'>[{m.at}] {html.escape(m.text())}"
                     f"{f'<ul>{details}</ul>' if details else ''}</div>")
    return "".join(items)

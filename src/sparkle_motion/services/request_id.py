"""Request ids: the one token that ties a request's log lines, headers and error bodies together.

A caller may send its own ``X-Request-ID`` (the agents forward theirs to the
tools, so one id follows a request across the mesh); anything else gets a new
id.  The id lives in ``request_id_var`` for the length of the request.
"""

from __future__ import annotations

import re

from sparkle_motion.ids import new_id
from sparkle_motion.logs import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed into logs and headers, so only a short, plain token is accepted.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def current_request_id() -> str:
    return request_id_var.get() or ""


def accept_request_id(incoming: str | None) -> str:
    """The caller's id when it is a plain, short token; otherwise a fresh one."""
    return incoming if incoming and _REQUEST_ID_RE.match(incoming) else new_id("req")

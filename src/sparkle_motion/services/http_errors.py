"""The JSON error body every mesh service answers with, and the mapping of pydantic errors onto it.

One shape for every failure — ``{"error": {"code", "message", ...}, "request_id"}``
— so that a client handles a tool, an agent and the middleware alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from sparkle_motion.errors import InvalidInputError, ServiceBusyError, SparkleError, UnauthorizedError
from sparkle_motion.services.request_id import current_request_id


def error_body(error: Mapping[str, Any]) -> dict[str, Any]:
    return {"error": dict(error), "request_id": current_request_id()}


def _retry_after_header(seconds: float) -> str:
    # HTTP wants whole delay-seconds; never advertise 0 (clients would spin).
    return str(max(1, math.ceil(seconds)))


def sparkle_error_response(exc: SparkleError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, ServiceBusyError):
        headers["Retry-After"] = _retry_after_header(exc.retry_after)
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.to_dict()), status_code=exc.http_status, headers=headers)


def json_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """Pydantic ``loc`` → JSON path: ``("clips", 0, "uri")`` → ``clips[0].uri``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_error(errors: list[Mapping[str, Any]], *, strip_body: bool = False) -> InvalidInputError:
    """Map pydantic errors to one InvalidInputError: ``field`` = first error's path, ``details`` = all."""
    details = []
    for err in errors:
        if err.get("type") == "json_invalid":
            # FastAPI reports an unparseable body at a character offset ("body", 0): that is the
            # body itself, answered like the FunctionTools' own invalid_json.
            return InvalidInputError(f"request body is not valid JSON: {err.get('msg', 'JSON decode error')}",
                                     field="body", code="invalid_json")
        loc = tuple(err.get("loc", ()))
        if strip_body and loc[:1] == ("body",):
            loc = loc[1:]
        details.append({"field": json_path(loc) or "body", "message": err.get("msg", "invalid"),
                        "type": err.get("type", "value_error")})
    first = details[0] if details else {"field": "body", "message": "invalid input"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return InvalidInputError(f"{first['field']}: {first['message']}{more}", field=first["field"], details=details)

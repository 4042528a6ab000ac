"""The JSON error body every mesh service answers with, and the mapping of pydantic errors onto it.

One shape for every failure — ``{"error": {"code", "message", ...}, "request_id"}``
— so that a client handles a tool, an agent and the middleware alike.
"""

from __future__ import annotations

import json
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


class _OutOfRange:
    """A number literal that has no finite Python value: an int over the int-string limit, 1e400."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def describe(self) -> str:
        if len(self.literal) > 40:
            return f"number literal of {len(self.literal)} characters is out of range"
        return f"number {self.literal} is out of range"


def _reject_constant(name: str) -> Any:
    raise InvalidInputError(f"request body is not valid JSON: {name} is not a JSON number", code="invalid_json",
                            field="body")


def _first_out_of_range(data: Any) -> tuple[str, _OutOfRange] | None:
    # Iterative, document order: the body may nest as deep as the JSON parser allowed.
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, _OutOfRange):
            return json_path(loc) or "body", value
        if isinstance(value, dict):
            stack.extend(((*loc, k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(value))))
    return None


def parse_json_body(body: bytes | str) -> Any:
    """Parse a request body as strict JSON; every problem is a 422 ``InvalidInputError``.

    Why not plain ``json.loads``: it raises ``ValueError`` (not ``JSONDecodeError``)
    on an integer literal over Python's int-string limit (4,300 digits), turns
    ``1e400`` into ``inf`` and accepts ``NaN``/``Infinity``, none of which is JSON
    a schema can bound.  Here such a number becomes a 422 naming its JSON path
    (``seed``, ``clips[0].in_s``), so a bound in the schema is never bypassed.
    A whole number written as a float (``2.0``) becomes an int, as JSON Schema reads it.
    """
    found: list[bool] = []

    def parse_int(text: str) -> Any:
        try:
            return int(text)
        except ValueError:  # over sys.get_int_max_str_digits()
            found.append(True)
            return _OutOfRange(text)

    def parse_float(text: str) -> Any:
        value = float(text)
        if not math.isfinite(value):
            found.append(True)
            return _OutOfRange(text)
        # JSON Schema counts 2.0 as the integer 2; strict validation then takes it for an int
        # field, and a float field takes an int anyway.
        return int(value) if value.is_integer() else value

    try:
        data = json.loads(body, parse_int=parse_int, parse_float=parse_float, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}", code="invalid_json", field="body") from None
    except RecursionError:  # 1 MiB of '[' fits under the size limit
        raise InvalidInputError("request body nests too deeply", code="invalid_json", field="body") from None
    if found:
        where = _first_out_of_range(data)
        if where is not None:
            field, number = where
            raise InvalidInputError(f"{field}: {number.describe()}", field=field, code="invalid_input")
    return data

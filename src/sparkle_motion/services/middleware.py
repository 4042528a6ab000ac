"""CommonMiddleware: the ASGI layer in front of every mesh service.

It gives each request its id, checks the bearer token, enforces the body-size
limit while the body streams in, writes the access log, and turns any exception
nothing else caught into the common JSON 500 — before FastAPI's own handlers.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from sparkle_motion.errors import PayloadTooLargeError, SparkleError, UnauthorizedError
from sparkle_motion.logs import get_logger, request_id_var, tool_id_var
from sparkle_motion.services.http_errors import sparkle_error_response
from sparkle_motion.services.request_id import accept_request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# "/" and the studio's static files hold no data: the page must load to ask for the token it then sends.
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = ("/studio/static/",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class CommonMiddleware:
    """Request id, access log, bearer auth, body-size limit and a last-resort 500.

    A pure ASGI middleware (not BaseHTTPMiddleware) so it can watch the request
    body as it streams in and stop a chunked upload at the limit.
    """

    def __init__(self, app: ASGIApp, *, service_id: str, token: str | None, max_body_bytes: int,
                 body_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.service_id = service_id
        self.token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes
        # Exact paths that take a bigger body than JSON requests (production_agent's artifact upload).
        self.body_limits = dict(body_limits or {})
        self.log = get_logger("sparkle_motion.services.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = accept_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_token = request_id_var.set(request_id)
        tool_token = tool_id_var.set(self.service_id)
        started = time.perf_counter()
        outcome: dict[str, Any] = {"status": None, "rejected": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
                outcome["status"] = message["status"]
            await send(message)

        async def reply(exc: SparkleError) -> None:
            await sparkle_error_response(exc)(scope, receive, send_with_id)

        try:
            path = scope.get("path", "")
            if self.token is not None and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
                problem = self._auth_problem(scope)
                if problem is not None:
                    await reply(UnauthorizedError(problem))
                    return
            limit = self.body_limits.get(path, self.max_body_bytes)
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > limit:
                await reply(PayloadTooLargeError(
                    f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes; "
                    "send media by artifact URI, not inline", context={"limit_bytes": limit}))
                return
            await self.app(scope, self._limited_receive(receive, outcome, reply, limit),
                           self._guarded_send(send_with_id, outcome))
        except Exception as exc:  # noqa: BLE001 - the one place that turns anything left into JSON
            if outcome["rejected"]:
                pass  # the app noticed the cut-off body; the 413 is already sent
            elif outcome["status"] is None:
                self.log.exception("http.unhandled_error", path=scope.get("path"))
                await reply(SparkleError(f"internal error: {type(exc).__name__}",
                                         context={"exception_type": type(exc).__name__}))
            else:
                self.log.exception("http.error_after_response_start", path=scope.get("path"))
        finally:
            self.log.info("http.request", method=scope.get("method"), path=scope.get("path"),
                          status=outcome["status"], duration_ms=round((time.perf_counter() - started) * 1000, 3),
                          client=(scope.get("client") or ("", 0))[0])
            tool_id_var.reset(tool_token)
            request_id_var.reset(rid_token)

    def _auth_problem(self, scope: Scope) -> str | None:
        value = _header(scope, b"authorization")
        if not value:
            return "missing bearer token (send 'Authorization: Bearer <SPARKLE_TOKEN>')"
        scheme, _, credential = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return "Authorization header must be 'Bearer <token>'"
        assert self.token is not None
        if not hmac.compare_digest(credential.strip().encode("utf-8"), self.token):
            return "invalid bearer token"
        return None

    def _limited_receive(self, receive: Receive, outcome: dict[str, Any],
                         reply: Callable[[SparkleError], Awaitable[None]], limit: int) -> Receive:
        received = 0

        async def limited() -> Message:
            nonlocal received
            if outcome["rejected"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell the app the client is gone, so nothing
                    # past the limit is read or buffered.
                    await reply(PayloadTooLargeError(
                        f"request body exceeds the limit of {limit} bytes; send media by artifact URI, not inline",
                        context={"limit_bytes": limit}))
                    outcome["rejected"] = True
                    return {"type": "http.disconnect"}
            return message

        return limited

    @staticmethod
    def _guarded_send(send: Send, outcome: dict[str, Any]) -> Send:
        async def guarded(message: Message) -> None:
            if outcome["rejected"]:
                return  # the 413 went out already; drop whatever the app answers
            await send(message)

        return guarded

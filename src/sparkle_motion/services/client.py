"""ToolClient: the typed HTTP client every caller of a FunctionTool uses."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel, ValidationError

from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import ToolCallError
from sparkle_motion.logs import get_logger, request_id_var

ResponseT = TypeVar("ResponseT", bound=BaseModel)

# Remote error codes that a retry cannot fix even though they come with a 503.
_PERMANENT_503_CODES = frozenset({"load_failed"})


class ToolClient:
    """Calls one mesh service over HTTP.

    Retries (exponential backoff with jitter, bounded) happen only when the
    request cannot have reached the service (connection refused / connect
    timeout) or the service answered 503 (busy, warming up) — honouring its
    Retry-After up to ``max_retry_after_s``.  Any other non-2xx answer raises
    :class:`ToolCallError` at once, carrying the status and the remote error
    body; a read timeout is not retried because the tool may still be working.
    """

    def __init__(
        self,
        tool_id: str,
        settings: Settings | None = None,
        base_url: str | None = None,
        timeout: float = 300.0,
        *,
        connect_timeout: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        max_retry_after_s: float = 30.0,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Settings are only needed for what the caller did not pass: the URL and the token.
        if settings is None and (base_url is None or token is None):
            settings = get_settings()
        self.tool_id = tool_id
        if base_url is None:
            assert settings is not None
            base_url = settings.url_for(tool_id)
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        if token is None and settings is not None:
            token = settings.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)))
        self._log = get_logger("sparkle_motion.services.client", target=tool_id)

    # ------------------------------------------------------------ public API

    @overload
    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: None = None, *,
               request_id: str | None = None) -> dict[str, Any]: ...

    @overload
    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: type[ResponseT], *,
               request_id: str | None = None) -> ResponseT: ...

    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: type[ResponseT] | None = None, *,
               request_id: str | None = None) -> dict[str, Any] | ResponseT:
        """POST /invoke; returns the JSON body, or ``response_model`` parsed from it."""
        body = payload.model_dump(mode="json", exclude_unset=False) if isinstance(payload, BaseModel) else dict(payload)
        data = self._call("POST", "/invoke", json=body, request_id=request_id)
        if response_model is None:
            return data
        try:
            return response_model.model_validate(data)
        except ValidationError as exc:
            raise ToolCallError(f"{self.tool_id} answered a body that is not a valid {response_model.__name__}: "
                                f"{exc.error_count()} error(s)", tool_id=self.tool_id, status=200,
                                code="invalid_tool_response", context={"errors": exc.errors(include_input=False)[:5]}) from None

    def metadata(self) -> dict[str, Any]:
        return self._call("GET", "/metadata")

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET another route of the service (e.g. an agent's ``/status``), same retry and error policy."""
        return self._call("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> dict[str, Any]:
        """POST to another route of the service; 503 answers (nothing was done) are retried like /invoke."""
        return self._call("POST", path, json=json)

    def health(self) -> bool:
        """True when the process answers /health (no retries)."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        """True on 200, False while warming up (503) or unreachable; no retries.

        Any other answer (401: wrong token, 404: not a mesh service) is a
        misconfiguration, not "not ready yet", and raises ToolCallError.
        """
        try:
            response = self._http.get("/ready", headers=self._request_headers(None))
        except httpx.TransportError:
            return False
        if response.status_code == 200:
            return True
        if response.status_code == 503:
            return False
        raise self._error_from(response, "GET", "/ready")

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        """Block until /ready answers 200; ToolCallError (code ``not_ready``) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: str = "no answer yet"
        while True:
            try:
                response = self._http.get("/ready", headers=self._request_headers(None))
                if response.status_code == 200:
                    return
                if response.status_code != 503:
                    raise self._error_from(response, "GET", "/ready")
                last = f"503 {self._remote_error(response).get('message', '')}"
                if self._remote_error(response).get("code") in _PERMANENT_503_CODES:
                    raise self._error_from(response, "GET", "/ready")
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ToolCallError(f"{self.tool_id} at {self.base_url} not ready after {timeout:.1f}s ({last})",
                                    tool_id=self.tool_id, code="not_ready", context={"url": self.base_url})
            time.sleep(interval)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ToolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _request_headers(self, request_id: str | None) -> dict[str, str]:
        # Propagate the caller's request id so one id threads through the mesh's logs.
        rid = request_id or request_id_var.get()
        return {"X-Request-ID": rid} if rid else {}

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half fixed, half random, so retries never collapse to 0 nor synchronise.
        ceiling = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              request_id: str | None = None) -> dict[str, Any]:
        headers = self._request_headers(request_id)
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, params=dict(params) if params else None,
                                              headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    raise ToolCallError(
                        f"cannot reach {self.tool_id} at {self.base_url} after {attempt + 1} attempt(s): "
                        f"{type(exc).__name__}: {exc}", tool_id=self.tool_id, code="tool_unreachable",
                        context={"url": self.base_url, "attempts": attempt + 1, "exception_type": type(exc).__name__},
                    ) from exc
                delay = self._backoff(attempt)
                self._log.warning("tool_call.retry", path=path, attempt=attempt + 1, reason=type(exc).__name__,
                                  delay_s=round(delay, 3))
            except httpx.TimeoutException as exc:
                raise ToolCallError(f"{self.tool_id} {method} {path} timed out: {type(exc).__name__}",
                                    tool_id=self.tool_id, code="tool_timeout",
                                    context={"url": self.base_url}) from exc
            except httpx.HTTPError as exc:
                raise ToolCallError(f"{self.tool_id} {method} {path} failed: {type(exc).__name__}: {exc}",
                                    tool_id=self.tool_id, context={"url": self.base_url}) from exc
            else:
                if 200 <= response.status_code < 300:
                    return self._json(response, method, path)
                retryable = (response.status_code == 503
                             and self._remote_error(response).get("code") not in _PERMANENT_503_CODES)
                if not retryable or attempt >= self.retries:
                    raise self._error_from(response, method, path, attempts=attempt + 1)
                delay = self._retry_after(response) or self._backoff(attempt)
                self._log.warning("tool_call.retry", path=path, attempt=attempt + 1, reason="503",
                                  remote_code=self._remote_error(response).get("code"), delay_s=round(delay, 3))
            time.sleep(delay)
            attempt += 1

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            return None  # the HTTP-date form is not used inside the mesh
        return min(max(seconds, 0.0), self.max_retry_after_s)

    @staticmethod
    def _remote_error(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        error = body.get("error") if isinstance(body, dict) else None
        return error if isinstance(error, dict) else {}

    def _json(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise ToolCallError(f"{self.tool_id} {method} {path} answered {response.status_code} with a non-JSON body",
                                tool_id=self.tool_id, status=response.status_code,
                                code="invalid_tool_response") from None
        if not isinstance(data, dict):
            raise ToolCallError(f"{self.tool_id} {method} {path} answered a JSON {type(data).__name__}, not an object",
                                tool_id=self.tool_id, status=response.status_code, code="invalid_tool_response")
        return data

    def _error_from(self, response: httpx.Response, method: str, path: str, *, attempts: int = 1) -> ToolCallError:
        remote = self._remote_error(response)
        try:
            body = response.json()
        except ValueError:
            body = {}
        remote_request_id = body.get("request_id") if isinstance(body, dict) else None
        message = remote.get("message") or response.text[:200] or response.reason_phrase
        code = remote.get("code", f"http_{response.status_code}")
        return ToolCallError(
            f"{self.tool_id} {method} {path} → {response.status_code} {code}: {message}",
            tool_id=self.tool_id, status=response.status_code, remote_error=remote, field=remote.get("field"),
            context={"url": self.base_url, "remote_request_id": remote_request_id or
                     response.headers.get("X-Request-ID"), "attempts": attempts},
        )

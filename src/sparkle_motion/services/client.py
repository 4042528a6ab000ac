"""ToolClient: the typed HTTP client every caller of a FunctionTool uses."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel, ValidationError

from sparkle_motion.config import ClientPolicy, Settings, get_settings
from sparkle_motion.errors import ToolCallError
from sparkle_motion.logs import get_logger, request_id_var
from sparkle_motion.mesh import Supervision, supervision

ResponseT = TypeVar("ResponseT", bound=BaseModel)

# Remote error codes that a retry cannot fix even though they come with a 503.
_PERMANENT_503_CODES = frozenset({"load_failed"})
#: Job polling: the first poll after this long, then 1.5x longer each time up to the cap.
JOB_POLL_FIRST_S = 0.25
JOB_POLL_MAX_S = 2.0
#: After a DELETE, how long to wait for the job to end (its backend stops at its next step).
JOB_CANCEL_WAIT_S = 60.0
#: A job is given this much beyond the profile's max_job_s (the tool cancels it first) before the client does.
JOB_OVERRUN_GRACE_S = 60.0
_JOB_ENDED = frozenset({"succeeded", "failed", "cancelled"})

#: What a job poller is handed after every poll: the job's view (``GET /jobs/{id}``'s JSON).
JobProgressCallback = Callable[[dict[str, Any]], None]
#: Asked before every poll: a reason to cancel the job (DELETE /jobs/{id}), or None to go on.
CancelCheck = Callable[[], str | None]


def _replicated_on_ray(settings: Settings | None, tool_id: str) -> bool:
    """True when ``tool_id`` is served by more than one Ray Serve replica behind one route."""
    if settings is None or settings.engine != "ray" or tool_id not in settings.profile:
        return False
    return settings.profile[tool_id].ray.most_replicas > 1


class ToolClient:
    """Calls one mesh service over HTTP.

    A call is retried only when the service did not do it, and for as long as
    waiting is worth it, measured in time, not in attempts:

    * **busy** — a 503 (all slots in use, warming up) is retried, honouring
      its Retry-After (at most ``max_retry_after_s``) plus up to 25 % jitter,
      until ``busy_wait_s`` have passed since the first 503. Five runs sharing
      one single-slot tool all finish: each waits its turn.
    * **restarting** — a refused connection, or a connection dropped before
      the answer (the process died mid-call), is retried with exponential
      backoff while the mesh supervisor manages this service at this URL
      (``SPARKLE_HOME/mesh.json``, :func:`sparkle_motion.mesh.supervision`),
      up to ``restart_wait_s``; at once when the supervisor has given up on it.
      A service nobody restarts gets ``retries`` more attempts only.

    Budgets default to the profile's ``client:`` block. A hand-written loop
    rather than tenacity/stamina: each decision reads the answer (Retry-After,
    the remote error code) and mesh.json, with one time budget per kind of
    failure, which in those libraries would be the same code spread over
    retry/wait/stop callbacks. Any other non-2xx answer raises
    :class:`ToolCallError` at once with the remote error; a read timeout is
    never retried (the tool may still be working).

    **Jobs** — for a tool the profile marks ``long_running`` (or ``use_jobs=True``),
    :meth:`invoke` submits ``POST /jobs`` and polls ``GET /jobs/{id}`` with backoff
    (:meth:`run_job`), so the HTTP read timeout bounds one poll, never the work.
    A job that the tool process no longer knows (404: it restarted) or that stays
    unreachable past the restart budget raises ``job_lost``; the caller submits the
    work again. A job that failed busy (503: the device stayed locked) is submitted
    again within ``busy_wait_s``.
    """

    def __init__(
        self,
        tool_id: str,
        settings: Settings | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        *,
        connect_timeout: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        max_retry_after_s: float = 30.0,
        busy_wait_s: float | None = None,
        restart_wait_s: float | None = None,
        retry_dropped_posts: bool = True,
        use_jobs: bool | None = None,
        max_job_s: float | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Settings are only needed for what the caller did not pass: the URL and the token.
        if settings is None and (base_url is None or token is None):
            settings = get_settings()
        self.tool_id = tool_id
        self.settings = settings
        if base_url is None:
            assert settings is not None
            base_url = settings.url_for(tool_id)
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        policy = settings.client if settings is not None else ClientPolicy()
        self.busy_wait_s = policy.busy_wait_s if busy_wait_s is None else max(0.0, busy_wait_s)
        self.restart_wait_s = policy.restart_wait_s if restart_wait_s is None else max(0.0, restart_wait_s)
        timeout = policy.read_timeout_s if timeout is None else timeout
        # Jobs for the work the profile marks long; the tool's own max_job_s, when the profile sets one.
        profile = settings.profile.get(tool_id) if settings is not None else None
        self.use_jobs = bool(profile is not None and profile.long_running) if use_jobs is None else use_jobs
        self.max_job_s = max_job_s if max_job_s is not None else (profile.max_job_s if profile is not None else None)
        if use_jobs is None and self.use_jobs and _replicated_on_ray(settings, tool_id):
            # A job lives in one replica's memory, and Serve's proxy routes each poll to any replica:
            # the call is one /invoke held open instead (a disconnect still cancels it), bounded by
            # max_job_s rather than by one answer's read timeout. docs/scaling.md, "Known limits".
            self.use_jobs = False
            timeout = None if self.max_job_s is None else max(timeout, self.max_job_s + JOB_OVERRUN_GRACE_S)
        # A POST whose connection dropped may have been done; tools' /invoke is safe to redo
        # (same inputs, same outputs, the caller records only the answer it gets).
        self.retry_dropped_posts = retry_dropped_posts
        if token is None and settings is not None:
            token = settings.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connect = connect_timeout if timeout is None else min(connect_timeout, timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout, connect=connect))
        self._log = get_logger("sparkle_motion.services.client", target=tool_id)

    # ------------------------------------------------------------ public API

    @overload
    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: None = None, *,
               request_id: str | None = None, busy_wait_s: float | None = None,
               on_progress: JobProgressCallback | None = None,
               cancel_check: CancelCheck | None = None) -> dict[str, Any]: ...

    @overload
    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: type[ResponseT], *,
               request_id: str | None = None, busy_wait_s: float | None = None,
               on_progress: JobProgressCallback | None = None,
               cancel_check: CancelCheck | None = None) -> ResponseT: ...

    def invoke(self, payload: BaseModel | Mapping[str, Any], response_model: type[ResponseT] | None = None, *,
               request_id: str | None = None, busy_wait_s: float | None = None,
               on_progress: JobProgressCallback | None = None,
               cancel_check: CancelCheck | None = None) -> dict[str, Any] | ResponseT:
        """Run the tool once: POST /invoke, or a job (:meth:`run_job`) when ``use_jobs``.

        Returns the JSON body, or ``response_model`` parsed from it. ``busy_wait_s``
        overrides the client's busy budget for this call; ``on_progress`` and
        ``cancel_check`` apply to a job only.
        """
        body = payload.model_dump(mode="json", exclude_unset=False) if isinstance(payload, BaseModel) else dict(payload)
        if self.use_jobs:
            data = self.run_job(body, request_id=request_id, busy_wait_s=busy_wait_s, on_progress=on_progress,
                                cancel_check=cancel_check)
        else:
            data = self._call("POST", "/invoke", json=body, request_id=request_id, busy_wait_s=busy_wait_s)
        if response_model is None:
            return data
        try:
            return response_model.model_validate(data)
        except ValidationError as exc:
            raise ToolCallError(f"{self.tool_id} answered a body that is not a valid {response_model.__name__}: "
                                f"{exc.error_count()} error(s)", tool_id=self.tool_id, status=200,
                                code="invalid_tool_response", context={"errors": exc.errors(include_input=False)[:5]}) from None

    def run_job(self, body: Mapping[str, Any], *, request_id: str | None = None, busy_wait_s: float | None = None,
                on_progress: JobProgressCallback | None = None,
                cancel_check: CancelCheck | None = None) -> dict[str, Any]:
        """Submit ``body`` as a job, poll it to its end and return the tool's response.

        Raises ToolCallError: the job's own error when it failed (code and status
        as /invoke would have answered), ``job_cancelled`` when ``cancel_check``
        asked for a cancel or someone else cancelled it, ``job_lost`` when the tool
        process forgot it, ``tool_timeout`` past ``max_job_s`` (plus a grace).
        """
        budget = self.busy_wait_s if busy_wait_s is None else max(0.0, busy_wait_s)
        busy_since: float | None = None
        attempt = 0
        while True:
            view = self._call("POST", "/jobs", json=dict(body), request_id=request_id, busy_wait_s=busy_wait_s)
            view = self._follow_job(view, on_progress, cancel_check)
            if view["state"] == "succeeded":
                return view.get("response") or {}
            error = view.get("error") or {}
            busy = (view["state"] == "failed" and view.get("error_status") == 503
                    and error.get("code") not in _PERMANENT_503_CODES)
            busy_since = time.monotonic() if busy_since is None else busy_since
            left = budget - (time.monotonic() - busy_since)
            if not busy or left <= 0:
                raise self._job_error(view)
            delay = min(self._backoff(min(attempt, 8)) + float(error.get("context", {}).get("retry_after", 0) or 0),
                        left)
            self._log.warning("tool_call.job_busy_resubmit", job_id=view["job_id"], remote_code=error.get("code"),
                              delay_s=round(delay, 3))
            time.sleep(delay)
            attempt += 1

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id}: the job's view (same retry and error policy as every call)."""
        return self._call("GET", f"/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """DELETE /jobs/{id}; the job's view. A job that already ended is answered by its view too (no 409)."""
        try:
            return self._call("DELETE", f"/jobs/{job_id}")
        except ToolCallError as exc:
            if exc.status == 409:
                return self.job(job_id)
            raise

    def _follow_job(self, view: dict[str, Any], on_progress: JobProgressCallback | None,
                    cancel_check: CancelCheck | None) -> dict[str, Any]:
        job_id = str(view["job_id"])
        started = time.monotonic()
        interval = JOB_POLL_FIRST_S
        cancelled_at: float | None = None
        why = ""
        while True:
            if on_progress is not None:
                on_progress(view)
            if view["state"] in _JOB_ENDED:
                if cancelled_at is not None and view["state"] != "succeeded":
                    raise self._job_cancelled(view, why)
                return view
            now = time.monotonic()
            if cancelled_at is None:
                reason = cancel_check() if cancel_check is not None else None
                overrun = self.max_job_s is not None and now - started > self.max_job_s + JOB_OVERRUN_GRACE_S
                if reason or overrun:
                    why = reason or f"ran past max_job_s ({self.max_job_s:g} s)"
                    self._log.warning("tool_call.job_cancel", job_id=job_id, reason=why)
                    cancelled_at = now
                    view = self.cancel_job(job_id)
                    interval = JOB_POLL_FIRST_S
                    continue
            elif now - cancelled_at > JOB_CANCEL_WAIT_S:
                raise self._job_cancelled(view, f"{why}; still {view['state']} {JOB_CANCEL_WAIT_S:.0f} s after "
                                                "the cancel")
            time.sleep(interval)
            interval = min(interval * 1.5, JOB_POLL_MAX_S)
            view = self._poll_job(job_id)

    def _poll_job(self, job_id: str) -> dict[str, Any]:
        """GET the job; a poll that times out is asked again (it changes nothing) for up to ``restart_wait_s``."""
        slow_since: float | None = None
        while True:
            try:
                return self.job(job_id)
            except ToolCallError as exc:
                if exc.code == "tool_timeout":
                    slow_since = time.monotonic() if slow_since is None else slow_since
                    if time.monotonic() - slow_since <= self.restart_wait_s:
                        self._log.warning("tool_call.job_poll_timeout", job_id=job_id)
                        continue
                lost = self._job_lost_or(exc, job_id)
                if lost is exc:
                    raise
                raise lost from exc

    def _job_lost_or(self, exc: ToolCallError, job_id: str) -> ToolCallError:
        """``job_lost`` when the tool process forgot the job or stays out of reach; else ``exc`` itself."""
        if exc.status != 404 and exc.code not in ("tool_unreachable", "tool_timeout"):
            return exc
        why = ("the tool process does not know it (it restarted)" if exc.status == 404
               else "the tool process is unreachable" if exc.code == "tool_unreachable"
               else f"its polls kept timing out for {self.restart_wait_s:.0f} s")
        return ToolCallError(f"{self.tool_id} job {job_id} was lost: {why}", tool_id=self.tool_id,
                             status=exc.status, code="job_lost", remote_error=exc.remote_error,
                             context={"url": self.base_url, "job_id": job_id, "cause": exc.code})

    def _job_cancelled(self, view: dict[str, Any], why: str) -> ToolCallError:
        return ToolCallError(f"{self.tool_id} job {view['job_id']} cancelled: {why}", tool_id=self.tool_id,
                             code="job_cancelled", remote_error=view.get("error") or {},
                             context={"url": self.base_url, "job_id": view["job_id"], "state": view["state"]})

    def _job_error(self, view: dict[str, Any]) -> ToolCallError:
        remote = view.get("error") or {}
        code = remote.get("code", f"job_{view['state']}")
        if view["state"] == "cancelled":
            return self._job_cancelled(view, remote.get("message") or "cancelled by someone else")
        return ToolCallError(
            f"{self.tool_id} job {view['job_id']} → {view.get('error_status') or view['state']} {code}: "
            f"{remote.get('message', '')}", tool_id=self.tool_id, status=view.get("error_status"),
            remote_error=remote, field=remote.get("field"),
            context={"url": self.base_url, "job_id": view["job_id"], "remote_request_id": view.get("request_id")})

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

    def supervision(self) -> Supervision:
        """What mesh.json says about this service at this client's URL (not managed without settings)."""
        if self.settings is None:
            return Supervision(False, None)
        return supervision(self.settings, self.tool_id, self.base_url)

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              request_id: str | None = None, busy_wait_s: float | None = None) -> dict[str, Any]:
        headers = self._request_headers(request_id)
        busy_budget = self.busy_wait_s if busy_wait_s is None else max(0.0, busy_wait_s)
        attempt = 0
        busy_since: float | None = None    # first 503 of the current busy spell
        away_since: float | None = None    # first refused/dropped connection of the current outage
        while True:
            try:
                response = self._http.request(method, path, json=json, params=dict(params) if params else None,
                                              headers=headers)
                self._raise_if_replica_lost(response)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError) as exc:
                dropped = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if dropped and method != "GET" and not self.retry_dropped_posts:
                    raise self._lost(method, path, exc, attempt, "the connection dropped before the answer; "
                                     "the call may have been done") from exc
                busy_since = None
                away_since = time.monotonic() if away_since is None else away_since
                delay = self._wait_for_restart(exc, method, path, attempt, away_since)
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
                away_since = None
                retryable = (response.status_code == 503
                             and self._remote_error(response).get("code") not in _PERMANENT_503_CODES)
                busy_since = time.monotonic() if busy_since is None else busy_since
                left = busy_budget - (time.monotonic() - busy_since)
                if not retryable or left <= 0:
                    raise self._error_from(response, method, path, attempts=attempt + 1,
                                           waited_s=time.monotonic() - busy_since if retryable else None)
                retry_after = self._retry_after(response)
                delay = (retry_after * random.uniform(1.0, 1.25) if retry_after is not None
                         else self._backoff(attempt))
                delay = min(delay, left)
                self._log.warning("tool_call.retry", path=path, attempt=attempt + 1, reason="503",
                                  remote_code=self._remote_error(response).get("code"), delay_s=round(delay, 3))
            time.sleep(delay)
            attempt += 1

    def _raise_if_replica_lost(self, response: httpx.Response) -> None:
        """A Ray Serve proxy's own 500/502/504 (the replica serving the call died): the call was dropped.

        Every mesh service answers its errors with the shared JSON body (the middleware's
        last-resort 500 included), so a 5xx without it did not come from the tool but from a
        proxy in front of it that lost the replica mid-call. It is retried like a connection
        dropped before the answer (the restart budget; Serve starts a new replica), while a
        tool's own 500 (a backend failure) still raises at once.
        """
        if response.status_code in (500, 502, 504) and not self._remote_error(response):
            raise httpx.RemoteProtocolError(f"the proxy answered {response.status_code} without the tool's error body "
                                            f"(its replica was lost mid-call): {response.text[:120]!r}",
                                            request=response.request)

    def _wait_for_restart(self, exc: httpx.TransportError, method: str, path: str, attempt: int,
                          away_since: float) -> float:
        """The delay before the next try at a service that refused or dropped the connection, or raise."""
        supervised = self.supervision()
        if supervised.gave_up:
            raise self._lost(method, path, exc, attempt, f"the mesh supervisor gave up restarting it after "
                             f"{supervised.restarts} restart(s); see {supervised.log}")
        if supervised.managed:
            left = self.restart_wait_s - (time.monotonic() - away_since)
            if left <= 0:
                raise self._lost(method, path, exc, attempt, f"still down after {self.restart_wait_s:.0f} s "
                                 f"(supervisor state: {supervised.state})")
            return min(self._backoff(min(attempt, 8)), left)
        if attempt >= self.retries:
            raise self._lost(method, path, exc, attempt, "no mesh supervisor restarts it")
        return self._backoff(attempt)

    def _lost(self, method: str, path: str, exc: Exception, attempt: int, why: str) -> ToolCallError:
        return ToolCallError(
            f"cannot reach {self.tool_id} at {self.base_url} after {attempt + 1} attempt(s) ({why}): "
            f"{type(exc).__name__}: {exc}", tool_id=self.tool_id, code="tool_unreachable",
            context={"url": self.base_url, "attempts": attempt + 1, "exception_type": type(exc).__name__,
                     "method": method, "path": path},
        )

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

    def _error_from(self, response: httpx.Response, method: str, path: str, *, attempts: int = 1,
                    waited_s: float | None = None) -> ToolCallError:
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
                     response.headers.get("X-Request-ID"), "attempts": attempts,
                     **({"busy_waited_s": round(waited_s, 3)} if waited_s is not None else {})},
        )

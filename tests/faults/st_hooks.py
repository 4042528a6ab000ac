"""Schemathesis hooks for the fault suite (loaded with ``SCHEMATHESIS_HOOKS=st_hooks``).

- echo's two test hooks are switched off in generated bodies: ``fail: true``
  makes its backend raise on purpose (the framework's 500 path, which
  tests/test_services_http.py covers) and ``hold_s`` sleeps up to 10 s.  Only
  valid values are replaced, so a negative (schema-invalid) case stays negative.
- a job the fuzzer submits (``POST /jobs`` → 202) is waited for before the next
  request, so its work never holds the tool's single slot while the next ``/invoke``
  asks for it (a 503 busy that is right, but is no finding): calls stay one at a time.
- every response's status is appended to ``SPARKLE_ST_STATUS_LOG`` (one line:
  ``METHOD PATH STATUS``) when set, so a test counts the requests really sent
  and the 5xx among them, independently of schemathesis' own report.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    # Runs right before every request of every phase (map_body does not reach the coverage phase).
    body = case.body
    if not isinstance(body, dict) or "fail" not in body and "hold_s" not in body:
        return
    if body.get("fail") is True:
        body["fail"] = False
    hold = body.get("hold_s")
    if isinstance(hold, (int, float)) and not isinstance(hold, bool) and 0.05 < hold <= 10:
        body["hold_s"] = 0.0


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.method.upper() == "POST" and case.path == "/jobs" and response.status_code == 202:
        wait_for_job(str(response.request.url), json.loads(response.content)["job_id"],
                     dict(response.request.headers))
    path = os.environ.get("SPARKLE_ST_STATUS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{case.method} {case.path} {response.status_code}\n")


def wait_for_job(jobs_url: str, job_id: str, headers: dict[str, str], timeout_s: float = 120.0) -> None:
    """Poll ``GET /jobs/{id}`` until the job ended (or ``timeout_s``: then the next request may see 503)."""
    auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(headers=auth, timeout=10) as client:
        while time.monotonic() < deadline:
            view = client.get(f"{jobs_url.rstrip('/')}/{job_id}")
            if view.status_code != 200 or view.json().get("state") in ("succeeded", "failed", "cancelled"):
                return
            time.sleep(0.05)

"""Schemathesis hooks for the fault suite (loaded with ``SCHEMATHESIS_HOOKS=st_hooks``).

- echo's two test hooks are switched off in generated bodies: ``fail: true``
  makes its backend raise on purpose (the framework's 500 path, which
  tests/test_services_http.py covers) and ``hold_s`` sleeps up to 10 s.  Only
  valid values are replaced, so a negative (schema-invalid) case stays negative.
- every response's status is appended to ``SPARKLE_ST_STATUS_LOG`` (one line:
  ``METHOD PATH STATUS``) when set, so a test counts the requests really sent
  and the 5xx among them, independently of schemathesis' own report.
"""

from __future__ import annotations

import os
from typing import Any

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
    path = os.environ.get("SPARKLE_ST_STATUS_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{case.method} {case.path} {response.status_code}\n")

"""QAReport: the verdict of a QA pass, shared by every qa_qwen2vl backend.

The CPU backend (``signal``) fills it with measurements over decoded media; the
GPU backend (Qwen2-VL) adds vision-language checks (prompt adherence, anatomy,
artifacts, safety) with the same result shape, so callers read one format.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CheckStatus = Literal["passed", "failed", "inconclusive"]
Verdict = Literal["pass", "fail", "inconclusive"]

#: Longest interval list a request may carry; bounds validation and matching work.
MAX_INTERVALS = 256


class TimeInterval(BaseModel):
    """A half-open span of media time in seconds."""

    model_config = ConfigDict(extra="forbid")

    start_s: float = Field(ge=0, le=86_400)
    end_s: float = Field(ge=0, le=86_400)

    @model_validator(mode="after")
    def _ordered(self) -> "TimeInterval":
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be greater than start_s")
        return self

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class QACheckResult(BaseModel):
    """One check over one piece of media (or over the request, e.g. the text policy).

    ``score`` is the measured value and ``threshold`` the policy limit it was
    compared with (see each check's doc for the direction); ``time_s``/``frame``
    point at the first offending moment; ``segments`` lists every offending span.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    status: CheckStatus
    score: float | None = None
    threshold: float | None = None
    detail: str = ""
    time_s: float | None = None
    frame: int | None = None
    media_uri: str | None = None
    segments: list[TimeInterval] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict, description="supporting measurements")


class QAReport(BaseModel):
    """Overall verdict plus every check result.

    verdict: ``fail`` if any check failed, else ``inconclusive`` if any check
    could not run, else ``pass``. ``reasons`` names each failed (and, when the
    verdict is inconclusive, each inconclusive) check with its detail.
    """

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    checks: list[QACheckResult] = Field(default_factory=list)
    policy_version: str = ""


def _reason(result: QACheckResult) -> str:
    where = f" [{result.media_uri}]" if result.media_uri else ""
    return f"{result.name}{where}: {result.detail}"


def build_report(results: list[QACheckResult], *, policy_version: str = "") -> QAReport:
    """Derive the verdict and reasons from the check results."""
    failed = [r for r in results if r.status == "failed"]
    inconclusive = [r for r in results if r.status == "inconclusive"]
    if failed:
        verdict: Verdict = "fail"
    elif inconclusive or not results:
        # No result at all means nothing was verified: that is not a pass.
        verdict = "inconclusive"
    else:
        verdict = "pass"
    reasons = [_reason(r) for r in failed]
    if verdict == "inconclusive":
        reasons += [f"inconclusive: {_reason(r)}" for r in inconclusive] or ["no check produced a result"]
    return QAReport(verdict=verdict, reasons=reasons, checks=results, policy_version=policy_version)

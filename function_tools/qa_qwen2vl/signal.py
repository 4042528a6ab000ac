"""`signal` backend: QA by measurement — decoded luma, audio levels, VAD, loudness, SSIM.

The checks themselves are :class:`~function_tools.qa_qwen2vl.signal_checks.SignalChecks`
(shared with the ``qwen2-vl`` backend); this backend refuses the vision-language
checks and stores the report.
"""

from __future__ import annotations

import json
import time

from function_tools.qa_qwen2vl.models import ALL_CHECKS, VLM_CHECKS, QARequest, QAResponse
from function_tools.qa_qwen2vl.report import build_report
from function_tools.qa_qwen2vl.signal_checks import SignalChecks
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.services import ToolContext


class SignalBackend(SignalChecks):
    """CPU QA backend: every check is a measurement over decoded media."""

    def capabilities(self) -> dict[str, list[str]]:
        """What /metadata says this backend answers: the measurement checks, no vision check."""
        return {"checks": list(ALL_CHECKS), "vision_checks": []}

    def invoke(self, request: QARequest, ctx: ToolContext) -> QAResponse:
        assert self.policy is not None, "load() must run before invoke()"
        policy = self.policy
        started = time.perf_counter()
        explicit = request.checks is not None
        wanted = list(request.checks) if explicit else list(ALL_CHECKS)
        for index, name in enumerate(wanted):
            if name in VLM_CHECKS:
                raise InvalidInputError(f"{name!r} is a vision-language check: it needs the qwen2-vl backend; "
                                        f"this service runs 'signal' ({', '.join(ALL_CHECKS)})",
                                        field=f"checks[{index}]")
        self.require_expectations(request, wanted, explicit)
        states = [self.resolve(i, item, ctx, policy) for i, item in enumerate(request.media)]
        reference = None
        if request.expectations.reference_frame_uri and "continuity" in wanted:
            _, ref_path = ctx.resolve_input(request.expectations.reference_frame_uri,
                                            "expectations.reference_frame_uri")
            self.check_size(ref_path, "expectations.reference_frame_uri", policy)
            reference = ref_path
        portraits = self.resolve_portraits(request, ctx, policy)
        resolved_s = time.perf_counter()

        ctx.check_cancelled()
        results = self.run_checks(request, wanted, explicit, states, reference, policy, portraits)
        report = build_report(results, policy_version=policy.version)
        checked_s = time.perf_counter()

        timings = {"resolve_s": round(resolved_s - started, 6), "checks_s": round(checked_s - resolved_s, 6)}
        manifest = ctx.put_output(
            request, "qa_report", json.dumps(report.model_dump(mode="json"), indent=2).encode("utf-8"),
            "application/json",
            metadata={"verdict": report.verdict, "checks": wanted if explicit else "default",
                      "media": [m.uri for m in request.media], "policy_version": policy.version,
                      "params": request.expectations.model_dump(mode="json", exclude_none=True),
                      "timings": timings},
            ext=".json",
        )
        ctx.log.info("qa.done", verdict=report.verdict, results=len(results),
                     failed=sum(r.status == "failed" for r in results))
        return QAResponse(report=report, report_uri=manifest.uri, artifacts=[manifest], timings=timings)

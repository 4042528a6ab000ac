"""Which QA checks production asks for: what the QA backend can answer, with the vision checks named.

Why: production used to send one fixed list of signal checks, so on the gpu
profile the ``qwen2-vl`` backend had nothing to answer and Qwen2-VL never
loaded.  Now the QA tool says in ``/metadata`` (``capabilities.checks``) which
checks its backend answers, and a run asks, on every keyframe and on the
frames of every clip, for the vision checks (:data:`VISION_CHECKS`) that
backend has plus the signal checks it has.  A vision check it cannot answer
(all of them on ``signal``) is not dropped silently: the QA step's output
lists it under ``not_available``, the run logs it once, and the run summary
carries the list (``qa_not_available``).

The vision checks are named here and only here.  ``character_consistency``
is one of them: it is asked of keyframes (never of clip frames: a character
facing away is no failure) as soon as the QA tool lists it among its checks;
until then it is reported ``not_available``.  The stage that adds it must also
send what it compares against (the cast's portraits) in the request's
expectations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from function_tools.qa_qwen2vl.models import ALL_CHECKS
from sparkle_motion.errors import SparkleError
from sparkle_motion.logs import get_logger
from sparkle_motion.services import ToolClient

log = get_logger("sparkle_motion.production")

MediaRole = Literal["keyframe", "clip"]

#: The checks a vision-language model answers, in report order: asked wherever the backend has them.
VISION_CHECKS: tuple[str, ...] = ("prompt_adherence", "anatomy", "artifacts", "safety", "character_consistency")
#: Vision checks that apply to keyframes only.
KEYFRAME_ONLY_CHECKS = frozenset({"character_consistency"})
#: The measurement checks of each kind of media (asked when the backend has them, which both backends do).
SIGNAL_CHECKS: dict[str, tuple[str, ...]] = {
    "keyframe": ("degenerate_image", "text_policy"),
    # Continuity: the clip must open on its start keyframe (the previous shot's end keyframe).
    "clip": ("black_frames", "frozen_frames", "duration_mismatch", "continuity", "text_policy"),
}


@dataclass(frozen=True)
class CheckSelection:
    """The checks to send in a QARequest and the vision checks the backend cannot answer."""

    checks: list[str]
    not_available: list[str]


def select_checks(role: MediaRole, answered: frozenset[str]) -> CheckSelection:
    """The checks of ``role`` the backend answers (signal first, then vision) and the vision ones it does not."""
    vision = [c for c in VISION_CHECKS if role == "keyframe" or c not in KEYFRAME_ONLY_CHECKS]
    signal = [c for c in SIGNAL_CHECKS[role] if c in answered]
    return CheckSelection(checks=signal + [c for c in vision if c in answered],
                          not_available=[c for c in vision if c not in answered])


def answered_checks(client: ToolClient) -> frozenset[str]:
    """The checks the QA tool's backend answers (its /metadata ``capabilities.checks``).

    A tool that does not say (an older build) is taken for the ``signal``
    backend, which is what production asked of every backend before.
    """
    try:
        checks = (client.metadata().get("capabilities") or {}).get("checks")
    except (SparkleError, AttributeError, TypeError, ValueError) as exc:
        log.warning("qa_capabilities_unknown", tool_id=client.tool_id, error=str(exc)[:200])
        checks = None
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        return frozenset(ALL_CHECKS)
    return frozenset(checks)


class RunQaChecks:
    """One run's check selections: the tool asked once, the missing vision checks logged once.

    Thread-safe: a stage's clips are checked from ``fan_out``'s threads.
    """

    def __init__(self, client: Callable[[], ToolClient], warn: Callable[[str, list[str]], None]) -> None:
        self._client = client
        self._warn = warn
        self._lock = threading.Lock()
        self._answered: frozenset[str] | None = None
        self.not_available: set[str] = set()

    def select(self, role: MediaRole) -> CheckSelection:
        with self._lock:
            if self._answered is None:
                self._answered = answered_checks(self._client())
            selection = select_checks(role, self._answered)
            fresh = sorted(set(selection.not_available) - self.not_available)
            self.not_available.update(fresh)
        if fresh:
            self._warn(f"QA backend cannot answer the vision checks {', '.join(fresh)}: reported not_available",
                       fresh)
        return selection

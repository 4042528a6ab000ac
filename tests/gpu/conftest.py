"""Real-weight smoke tests: each runs only when its flag is set AND a CUDA GPU is present.

Flags: SMOKE_IMAGES, SMOKE_VIDEOS, SMOKE_TTS, SMOKE_LIPSYNC, SMOKE_QA (value "1").
Weights come from the ``gpu`` profile (hub ids resolved through the local HF
cache, or local directories).  Nothing in tests/gpu is ever faked: without a
GPU and the flag, these tests are skipped and say why.
"""

from __future__ import annotations

import os

import pytest

SMOKE_FLAGS = ("SMOKE_IMAGES", "SMOKE_VIDEOS", "SMOKE_TTS", "SMOKE_LIPSYNC", "SMOKE_QA")


def smoke_skip_reason(flag: str) -> str | None:
    """Why a smoke test guarded by ``flag`` cannot run here, or None when it can."""
    if flag not in SMOKE_FLAGS:
        raise ValueError(f"unknown smoke flag {flag!r}; known: {', '.join(SMOKE_FLAGS)}")
    if os.environ.get(flag) != "1":
        return f"real-weight smoke test: set {flag}=1 on a machine with a CUDA GPU and the weights"
    try:
        import torch
    except ImportError:
        return "real-weight smoke test: torch is not installed (pip install -e '.[gpu]')"
    if not torch.cuda.is_available():
        return f"{flag}=1 but no CUDA GPU is available (torch {torch.__version__}, CUDA build {torch.version.cuda})"
    return None


def require_smoke(flag: str) -> pytest.MarkDecorator:
    """``pytestmark = require_smoke("SMOKE_IMAGES")``: skip with the reason unless the smoke test can run."""
    reason = smoke_skip_reason(flag)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)

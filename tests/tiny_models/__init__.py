"""Tiny random-weight models built from configs for the GPU backends' CPU tests.

Each builder writes a complete model directory with ``save_pretrained`` (the
same layout as the real hub repos), so the backend under test loads it through
exactly the ``from_pretrained`` path a GPU user runs.  Tokenizers are built
from generated vocabularies: nothing is downloaded.
"""

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_gpu_profile(path: Path, tool_id: str, *, model: str, options: dict[str, Any]) -> Path:
    """configs/profiles/gpu.yaml with ``tool_id`` pointed at a tiny model directory (the rest unchanged)."""
    profile = yaml.safe_load((REPO / "configs" / "profiles" / "gpu.yaml").read_text(encoding="utf-8"))
    entry = dict(profile["tools"][tool_id])
    entry["model"] = model
    entry["options"] = {**(entry.get("options") or {}), **options}
    profile["tools"][tool_id] = entry
    profile["name"] = f"gpu-tiny-{tool_id}"
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return path

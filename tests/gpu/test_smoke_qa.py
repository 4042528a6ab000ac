"""Real-weight smoke test of qa_qwen2vl `qwen2-vl` on a CUDA GPU.

    SMOKE_QA=1 pytest tests/gpu/test_smoke_qa.py -v

Uses the ``gpu`` profile's model (Qwen/Qwen2-VL-7B-Instruct from the local HF
cache, or a local directory).  With real weights the model must answer in the
requested JSON: every VLM check gets a parsed verdict (passed or failed, not
``inconclusive`` for an unparseable answer), and an image of plain colour
bands is judged safe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from gpu.conftest import require_smoke
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import REPO_ROOT
from sparkle_motion.testing import running_tool

pytestmark = require_smoke("SMOKE_QA")


def test_qwen2vl_answers_in_parseable_json(tmp_path: Path) -> None:
    bands = np.zeros((448, 448, 3), dtype=np.uint8)
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (230, 230, 230)]):
        bands[i * 112:(i + 1) * 112] = colour
    image = tmp_path / "bands.png"
    Image.fromarray(bands).save(image)
    store = ArtifactStore(tmp_path)
    uri = store.put("inputs", "media", "media", image, "image/png").uri
    profile = yaml.safe_load((REPO_ROOT / "configs" / "profiles" / "gpu.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    try:
        with running_tool("qa_qwen2vl", home=tmp_path, ready_timeout=300,
                          env={"SPARKLE_PROFILE": str(path), "SPARKLE_TOKEN": None,
                               "SPARKLE_QA_QWEN2VL_BACKEND": None}) as tool:
            reply = tool.client.post("/invoke", timeout=900, json={
                "media": [{"uri": uri, "kind": "image"}],
                "checks": ["prompt_adherence", "safety", "artifacts"],
                "expectations": {"prompt": "horizontal bands of red, green, blue and white"}})
        assert reply.status_code == 200, reply.text
        checks = {c["name"]: c for c in reply.json()["report"]["checks"]}
        for name in ("prompt_adherence", "safety", "artifacts"):
            assert not checks[name]["detail"].startswith("unparseable"), checks[name]
        assert checks["safety"]["status"] == "passed"
        gpu = store.get(reply.json()["report_uri"]).metadata["gpu"]
        assert gpu["device"].startswith("cuda") and gpu["dtype"] == "bfloat16" and gpu["peak_vram_mb"] > 1000
    finally:
        store.close()

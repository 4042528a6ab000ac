"""bench/bench_gpu.py: without CUDA it says so and exits 0; ``--tiny`` runs the same code path on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparkle_motion.testing import project_path

pytest.importorskip("diffusers", reason="the GPU extra (torch, diffusers) is not installed")
import torch  # noqa: E402

BENCH = str(project_path("bench/bench_gpu.py"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=600,
                          cwd=str(project_path(".")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the bench would measure")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    done = run()
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout


def test_tiny_configs_run_the_code_path_on_cpu() -> None:
    done = run("--tiny", "--device", "cpu", "--models", "ltx,wan", "--json", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tiny"] is True and set(result["models"]) == {"ltx", "wan"}
    for model in result["models"].values():
        assert model["step"]["s"] > 0 and model["decode"]["s"] > 0
        render = model["render"]
        assert render["ours"]["s"] > 0 and render["bare"]["s"] > 0 and render["repeats"] == 1
        assert render["ratio"] == pytest.approx(render["ours"]["s"] / render["bare"]["s"], abs=1e-3)
    # our render call and the bare pipe(...) call rendered the same clip from the same pipeline object
    assert result["models"]["wan"]["render"]["same_output"] is True
    assert result["models"]["wan"]["geometry"] == "64x64x9"


def test_tiny_table_prints_ours_next_to_bare_with_the_ratio() -> None:
    """SDXL through SdxlBackend.invoke (the pipe injected as its warm model) against a bare pipe(...) call."""
    done = run("--tiny", "--device", "cpu", "--models", "sdxl", "--repeats", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert header.split()[-5:] == ["ours", "s", "ours", "GB", "bare"] or "ours/bare" in header
    row = next(line for line in lines if line.startswith("sdxl")).split()
    assert row[1] == "64x64" and len(row) == 11
    ours_s, bare_s, ratio = float(row[6]), float(row[8]), float(row[10])
    assert ours_s > 0 and bare_s > 0
    assert ratio == pytest.approx(ours_s / bare_s, rel=0.02, abs=2e-3)
    assert "fastest of 2 alternating rounds" in done.stdout

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
    done = run("--tiny", "--device", "cpu", "--models", "ltx,wan", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tiny"] is True and set(result["models"]) == {"ltx", "wan"}
    for model in result["models"].values():
        assert model["step"]["s"] > 0 and model["decode"]["s"] > 0
    assert result["models"]["wan"]["geometry"] == "64x64x9"

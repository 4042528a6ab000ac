"""gpu_utils.model_context on CPU: lock, warm cache, eviction, typed OOM, memory options.

The cross-process lock is exercised with a real second Python process that
holds the lock file; the models are small torch modules (the loading path is
the same whatever the loader builds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="gpu_utils tests need torch (pip install -e '.[gpu]')")

from sparkle_motion import gpu_utils  # noqa: E402
from sparkle_motion.errors import ConfigError, ServiceBusyError, SparkleError  # noqa: E402
from sparkle_motion.gpu_utils import (  # noqa: E402
    DeviceBusyError,
    LoadSpec,
    MemoryOptions,
    ModelOOMError,
    apply_memory_options,
    device_lock_is_free,
    model_context,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_cache(sparkle_home: Path):
    gpu_utils.evict()
    yield
    gpu_utils.evict()


class CountingLoader:
    def __init__(self) -> None:
        self.calls: list[LoadSpec] = []

    def __call__(self, spec: LoadSpec) -> Any:
        self.calls.append(spec)
        return torch.nn.Linear(4, 2).to(dtype=spec.torch_dtype)


def test_import_does_not_import_torch() -> None:
    code = "import sys, sparkle_motion.gpu_utils as g; print('torch' in sys.modules, 'filelock' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


def test_same_key_is_reused_and_telemetry_says_so() -> None:
    loader = CountingLoader()
    with model_context("tiny-linear", loader, device="cpu", keep_warm_s=60) as handle:
        first_model = handle.model
        with handle.inference():
            handle.model(torch.ones(1, 4))
        first = dict(handle.telemetry)
    with model_context("tiny-linear", loader, device="cpu", keep_warm_s=60) as handle:
        assert handle.model is first_model
        second = dict(handle.telemetry)
    assert len(loader.calls) == 1 and gpu_utils.load_count("tiny-linear") == 1
    assert first["reused"] is False and second["reused"] is True
    assert first["device"] == "cpu" and first["dtype"] == "float32" and first["model_key"] == "tiny-linear"
    assert first["load_s"] >= 0 and second["load_s"] == 0.0
    assert first["inference_s"] > 0 and second["inference_s"] == 0.0
    assert "peak_vram_mb" not in first  # CUDA only
    assert gpu_utils.loaded_key() == "tiny-linear"


def test_different_key_evicts_the_warm_model() -> None:
    import weakref

    loader = CountingLoader()
    with model_context("model-a", loader, device="cpu") as handle:
        ref = weakref.ref(handle.model)
    assert ref() is not None
    with model_context("model-b", loader, device="cpu") as handle:
        assert gpu_utils.loaded_key() == "model-b"
        assert ref() is None  # model-a's references were dropped before model-b loaded
    with model_context("model-a", loader, device="cpu") as handle:
        pass
    assert gpu_utils.load_count("model-a") == 2 and gpu_utils.load_count("model-b") == 1


def test_dtype_change_reloads_and_expired_keep_warm_reloads() -> None:
    loader = CountingLoader()
    with model_context("m", loader, device="cpu", dtype="float32"):
        pass
    with model_context("m", loader, device="cpu", dtype="bfloat16") as handle:
        assert handle.model.weight.dtype == torch.bfloat16 and handle.telemetry["dtype"] == "bfloat16"
    with model_context("m", loader, device="cpu", dtype="bfloat16", keep_warm_s=0) as handle:
        assert handle.telemetry["reused"] is True
    # keep_warm_s=0 on the last use: evicted on exit instead of staying resident
    assert gpu_utils.loaded_key() is None
    assert len(loader.calls) == 2 and gpu_utils.load_count("m") == 2


def test_idle_model_is_evicted_after_keep_warm() -> None:
    with model_context("idle", CountingLoader(), device="cpu", keep_warm_s=0.2):
        pass
    assert gpu_utils.loaded_key() == "idle"
    deadline = time.monotonic() + 5
    while gpu_utils.loaded_key() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gpu_utils.loaded_key() is None


HOLDER = textwrap.dedent("""
    import sys, time
    from sparkle_motion.gpu_utils import device_lock
    with device_lock("cpu"):
        print("held", flush=True)
        sys.stdin.readline()
""")


def test_lock_held_by_another_process_is_device_busy_fast(sparkle_home: Path) -> None:
    env = {**os.environ, "SPARKLE_HOME": str(sparkle_home)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not device_lock_is_free("cpu")
        loader = CountingLoader()
        started = time.monotonic()
        with pytest.raises(DeviceBusyError) as caught:
            with model_context("busy", loader, device="cpu", lock_timeout_s=0.3):
                pass
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2.0
        assert isinstance(caught.value, ServiceBusyError) and caught.value.http_status == 503
        assert caught.value.code == "device_busy" and caught.value.retry_after > 0
        assert caught.value.context["device"] == "cpu" and "lock" in caught.value.context
        assert loader.calls == []  # nothing was loaded while another process held the device
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    assert device_lock_is_free("cpu")
    with model_context("busy", CountingLoader(), device="cpu") as handle:
        assert handle.telemetry["reused"] is False


def _raise_cuda_oom(spec: LoadSpec) -> Any:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_oom_at_load_is_typed_and_frees_the_lock() -> None:
    with pytest.raises(ModelOOMError) as caught:
        with model_context("huge", _raise_cuda_oom, device="cpu"):
            pytest.fail("the body must not run when loading failed")
    err = caught.value
    assert isinstance(err, SparkleError) and err.code == "model_oom" and err.http_status == 507
    assert err.stage == "load" and err.context["stage"] == "load" and err.context["model_key"] == "huge"
    assert "cpu_offload" in err.context["hint"]
    assert err.context["memory"]["process_peak_rss_mb"] > 0
    assert err.context["exception_type"] == "OutOfMemoryError"
    assert device_lock_is_free("cpu") and gpu_utils.loaded_key() is None
    assert gpu_utils.load_count("huge") == 0


def test_oom_at_inference_is_typed_and_frees_the_lock() -> None:
    loader = CountingLoader()
    with pytest.raises(ModelOOMError) as caught:
        with model_context("ok", loader, device="cpu") as handle:
            with handle.inference():
                # The CPU allocator's wording: a RuntimeError, not torch's OOM class.
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                   "can't allocate memory: you tried to allocate 999 bytes")
    assert caught.value.stage == "inference" and "vae_tiling" in caught.value.context["hint"]
    assert device_lock_is_free("cpu")
    # The model itself loaded fine and stays warm for a smaller request.
    with model_context("ok", loader, device="cpu") as handle:
        assert handle.telemetry["reused"] is True


def test_other_errors_pass_through_unchanged_and_free_the_lock() -> None:
    with pytest.raises(ValueError, match="not an oom"):
        with model_context("x", CountingLoader(), device="cpu"):
            raise ValueError("not an oom")
    assert device_lock_is_free("cpu")


class FakeVae:
    def __init__(self) -> None:
        self.tiling = self.slicing = False

    def enable_tiling(self) -> None:
        self.tiling = True

    def enable_slicing(self) -> None:
        self.slicing = True


class PipeWithVae:
    def __init__(self) -> None:
        self.vae = FakeVae()
        self.unet = torch.nn.Linear(2, 2)
        self.components = {"vae": self.vae, "unet": self.unet}


def test_applied_memory_options_are_only_what_was_applied() -> None:
    memory = MemoryOptions(vae_tiling=True, vae_slicing=True, attention="xformers")
    pipe = PipeWithVae()
    applied = apply_memory_options(pipe, memory, "cpu")
    assert pipe.vae.tiling and pipe.vae.slicing
    # No enable_xformers_memory_efficient_attention on this pipe (and no xformers here): not recorded.
    assert applied == ["vae_tiling", "vae_slicing"]
    # A model without a VAE gets nothing, and nothing is claimed.
    assert apply_memory_options(torch.nn.Linear(2, 2), memory, "cpu") == []
    assert apply_memory_options(pipe, None, "cpu") == []


class AttentionHolder:
    """A component with diffusers' attention-processor interface and the given processors."""

    def __init__(self, processors: dict[str, Any]) -> None:
        self.attn_processors = dict(processors)

    def set_attn_processor(self, processor: Any) -> None:
        self.attn_processors = {name: processor for name in self.attn_processors}


def test_sdpa_replaces_only_generic_processors() -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    class OwnProcessor:  # e.g. Wan's WanAttnProcessor: must be left alone
        pass

    legacy = AttentionHolder({"a": AttnProcessor(), "b": AttnProcessor()})
    own = AttentionHolder({"a": OwnProcessor()})
    pipe = type("Pipe", (), {})()
    pipe.components = {"unet": legacy, "transformer": own}
    assert apply_memory_options(pipe, MemoryOptions(attention="sdpa"), "cpu") == ["attention_sdpa"]
    assert all(isinstance(p, AttnProcessor2_0) for p in legacy.attn_processors.values())
    assert all(isinstance(p, OwnProcessor) for p in own.attn_processors.values())
    only_own = type("Pipe", (), {})()
    only_own.components = {"transformer": AttentionHolder({"a": OwnProcessor()})}
    assert apply_memory_options(only_own, MemoryOptions(attention="sdpa"), "cpu") == []


def test_applied_options_reach_telemetry_through_loadspec_place() -> None:
    def loader(spec: LoadSpec) -> Any:
        return spec.place(PipeWithVae())

    with model_context("pipe", loader, device="cpu", memory=MemoryOptions(vae_slicing=True)) as handle:
        assert handle.telemetry["applied_memory_options"] == ["vae_slicing"]
        assert handle.model.vae.slicing and not handle.model.vae.tiling


def test_cpu_offload_on_cpu_raises_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_memory_options(PipeWithVae(), MemoryOptions(cpu_offload=True), "cpu")
    assert caught.value.field == "options.memory.cpu_offload"
    loader = CountingLoader()
    with pytest.raises(ConfigError):
        with model_context("offload", loader, device="cpu", memory=MemoryOptions(cpu_offload="model")):
            pass
    assert loader.calls == [] and device_lock_is_free("cpu")


def test_memory_options_from_profile_options_are_validated() -> None:
    assert MemoryOptions.from_options({"memory": {"vae_tiling": True}}) == MemoryOptions(vae_tiling=True)
    assert MemoryOptions.from_options({}) == MemoryOptions()
    with pytest.raises(ConfigError, match="unknown keys"):
        MemoryOptions.from_options({"memory": {"vae_tilling": True}})
    with pytest.raises(ConfigError, match="attention"):
        MemoryOptions(attention="flash")
    with pytest.raises(ConfigError, match="cpu_offload"):
        MemoryOptions(cpu_offload="yes")


def test_device_and_dtype_resolution() -> None:
    assert gpu_utils.resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert gpu_utils.resolve_dtype(None, "cpu") == "float32"
    assert gpu_utils.resolve_dtype(None, "cuda:0") == "float16"
    assert gpu_utils.resolve_dtype("fp16", "cpu") == "float16"
    assert gpu_utils.torch_dtype_for("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        gpu_utils.resolve_dtype("int8", "cpu")
    with pytest.raises(ConfigError, match="device"):
        gpu_utils.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            gpu_utils.resolve_device("cuda")

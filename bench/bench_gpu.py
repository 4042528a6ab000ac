"""GPU benchmark of the diffusion stacks at real size, with random weights (no hub, no checkpoint).

Each model is built from its public config (transcribed below from the repos'
``config.json``) on the ``meta`` device, moved with ``to_empty`` and initialised
with random weights, so the shapes, FLOPs and memory are those of the real
checkpoint while nothing is downloaded:

* ``sdxl``: the SDXL base UNet at 1024x1024 and the SDXL VAE;
* ``wan``: the Wan2.1 FLF2V 14B transformer at 1280x720, 81 frames, and the Wan VAE;
* ``ltx``: the LTX-Video 13B transformer at 768x512, 121 frames, and an LTX VAE
  (the 0.9.1 layout from diffusers' conversion script: same compression, 32 px x 8 frames).

Per model it measures, each with its own peak VRAM:

* ``step``: one denoising step of the bare transformer/UNet (classifier-free
  guidance batch of 2 where the backend uses it), ``torch.cuda.synchronize``d;
* ``decode``: one VAE decode of the final latent;

* ``render``: a whole ``--render-steps``-step render through our backend's call
  next to a bare ``pipe(...)`` with the same arguments on the same pipeline
  object, and the ratio ours/bare (``bench/gpu_pipelines.py`` assembles the
  pipelines with one-layer stand-in encoders of the real widths; 0 skips it).

No CUDA: it says so and exits 0.  ``--tiny`` runs the same code with tiny
configs (CPU is fine): that is how the test suite checks the script.
Run: ``.venv/bin/python bench/bench_gpu.py [--models sdxl,wan,ltx] [--tiny] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import gpu_pipelines  # bench/ is sys.path[0] when this runs as a script

# --------------------------------------------------------------------------- configs (public config.json)

SDXL_UNET = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE = {  # stabilityai/stable-diffusion-xl-base-1.0 vae/config.json
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 1024,
    "block_out_channels": [128, 256, 512, 512], "scaling_factor": 0.13025, "force_upcast": True,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
WAN_TRANSFORMER = {  # Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers transformer/config.json
    "patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
    "added_kv_proj_dim": 5120, "rope_max_seq_len": 1024, "pos_embed_seq_len": 514,
}
WAN_VAE = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,  # vae/config.json
           "temperal_downsample": [False, True, True]}
LTX_TRANSFORMER = {  # Lightricks/LTX-Video-0.9.8-13B-distilled transformer/config.json
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
    "attention_head_dim": 128, "cross_attention_dim": 4096, "num_layers": 48, "caption_channels": 4096,
    "qk_norm": "rms_norm_across_heads",
}
LTX_VAE = {  # diffusers scripts/convert_ltx_to_diffusers.py, the timestep-conditioned (0.9.1) layout
    "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [128, 256, 512, 512],
    "decoder_block_out_channels": [256, 512, 1024], "layers_per_block": [4, 3, 3, 3, 4],
    "decoder_layers_per_block": [5, 6, 7, 8], "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True], "decoder_inject_noise": [False, True, True, True],
    "upsample_residual": [True, True, True], "upsample_factor": [2, 2, 2], "timestep_conditioning": True,
    "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0, "encoder_causal": True,
    "decoder_causal": False,
}
# --tiny: the same code on a few MB (the shapes of tests/tiny_models).
TINY = {
    "sdxl": ({**SDXL_UNET, "block_out_channels": [32, 64], "attention_head_dim": [2, 4], "layers_per_block": 1,
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "cross_attention_dim": 64,
              "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2],
              "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80, "sample_size": 8},
             {**SDXL_VAE, "block_out_channels": [32, 64], "layers_per_block": 1,
              "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2},
             (64, 64, 1)),
    "wan": ({**WAN_TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 12, "text_dim": 32, "ffn_dim": 32,
             "num_layers": 2, "image_dim": 4, "added_kv_proj_dim": 24, "rope_max_seq_len": 32,
             "pos_embed_seq_len": 2 * 17},
            {**WAN_VAE, "base_dim": 3, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}, (64, 64, 9)),
    "ltx": ({**LTX_TRANSFORMER, "in_channels": 8, "out_channels": 8, "num_attention_heads": 4,
             "attention_head_dim": 8, "cross_attention_dim": 32, "num_layers": 1, "caption_channels": 32},
            {**LTX_VAE, "latent_channels": 8, "block_out_channels": [8, 8, 8, 8],
             "decoder_block_out_channels": [8, 16, 32], "layers_per_block": [1, 1, 1, 1, 1],
             "decoder_layers_per_block": [1, 1, 1, 1]},
            (64, 64, 9)),
}
FULL_GEOMETRY = {"sdxl": (1024, 1024, 1), "wan": (1280, 720, 81), "ltx": (768, 512, 121)}


# --------------------------------------------------------------------------- building

def random_init(module: Any, device: str, dtype: Any) -> Any:
    """meta → ``to_empty`` on the device → random weights (buffers zeroed), cast to ``dtype``."""
    import torch

    module = module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.02, generator=generator) if param.dim() > 1 else param.fill_(0.01)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    return module.to(dtype).eval()


def on_meta(factory: Callable[[], Any]) -> Any:
    import torch

    with torch.device("meta"):
        return factory()


class Stage:
    """Time and peak VRAM of one block of GPU work."""

    def __init__(self, device: str) -> None:
        self.device = device

    def measure(self, fn: Callable[[], Any]) -> dict[str, Any]:
        import torch

        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.inference_mode():
            result = fn()
        if cuda:
            torch.cuda.synchronize()
        out = {"s": round(time.perf_counter() - started, 4)}
        if cuda:
            out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["result"] = result
        return out


# --------------------------------------------------------------------------- per model

def bench_sdxl(device: str, dtype: Any, tiny: bool, render_steps: int, repeats: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet_cfg, vae_cfg, (width, height, _) = TINY["sdxl"] if tiny else (SDXL_UNET, SDXL_VAE, FULL_GEOMETRY["sdxl"])
    unet = random_init(on_meta(lambda: UNet2DConditionModel(**unet_cfg)), device, dtype)
    vae = random_init(on_meta(lambda: AutoencoderKL(**vae_cfg)), device, dtype)
    scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    latents = torch.randn(2, 4, height // scale, width // scale, device=device, dtype=dtype)
    text = torch.randn(2, 77, unet_cfg["cross_attention_dim"], device=device, dtype=dtype)
    pooled_dim = unet_cfg["projection_class_embeddings_input_dim"] - 6 * unet_cfg["addition_time_embed_dim"]
    added = {"text_embeds": torch.randn(2, pooled_dim, device=device, dtype=dtype),
             "time_ids": torch.tensor([[height, width, 0, 0, height, width]] * 2, device=device, dtype=dtype)}
    stage = Stage(device)
    step = stage.measure(lambda: unet(latents, torch.tensor([999.0], device=device), encoder_hidden_states=text,
                                      added_cond_kwargs=added).sample)
    decode = stage.measure(lambda: vae.decode(latents[:1] / vae.config.scaling_factor).sample)
    out = {"geometry": f"{width}x{height}", "step": step, "decode": decode}
    if render_steps:
        del latents, text, added
        pipe = gpu_pipelines.sdxl_pipeline(unet, vae, device, dtype)
        out["render"] = gpu_pipelines.sdxl_render(pipe, stage.measure, device, dtype, width, height, render_steps,
                                                  repeats)
    return out


def bench_wan(device: str, dtype: Any, tiny: bool, render_steps: int, repeats: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    t_cfg, vae_cfg, (width, height, frames) = TINY["wan"] if tiny else (WAN_TRANSFORMER, WAN_VAE,
                                                                        FULL_GEOMETRY["wan"])
    transformer = random_init(on_meta(lambda: WanTransformer3DModel(**t_cfg)), device, dtype)
    vae = random_init(on_meta(lambda: AutoencoderKLWan(**vae_cfg)), device, dtype)
    latent_frames = (frames - 1) // 4 + 1
    noise = torch.randn(2, 16, latent_frames, height // 8, width // 8, device=device, dtype=dtype)
    condition = torch.randn(2, 20, latent_frames, height // 8, width // 8, device=device, dtype=dtype)
    text = torch.randn(2, 512, t_cfg["text_dim"], device=device, dtype=dtype)
    # CLIP tokens of both keyframes, one image per row: the embedder folds each pair side by side.
    image = torch.randn(4, t_cfg["pos_embed_seq_len"] // 2, t_cfg["image_dim"], device=device, dtype=dtype)
    stage = Stage(device)
    step = stage.measure(lambda: transformer(torch.cat([noise, condition], dim=1),
                                             timestep=torch.tensor([999, 999], device=device),
                                             encoder_hidden_states=text, encoder_hidden_states_image=image,
                                             return_dict=False)[0])
    decode = stage.measure(lambda: vae.decode(noise[:1]).sample)
    out = {"geometry": f"{width}x{height}x{frames}", "step": step, "decode": decode}
    if render_steps:
        del noise, condition, text, image
        pipe = gpu_pipelines.wan_pipeline(transformer, vae, device, dtype)
        out["render"] = gpu_pipelines.wan_render(pipe, stage.measure, width, height, frames, render_steps,
                                                  repeats)
    return out


def bench_ltx(device: str, dtype: Any, tiny: bool, render_steps: int, repeats: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    t_cfg, vae_cfg, (width, height, frames) = TINY["ltx"] if tiny else (LTX_TRANSFORMER, LTX_VAE,
                                                                        FULL_GEOMETRY["ltx"])
    transformer = random_init(on_meta(lambda: LTXVideoTransformer3DModel(**t_cfg)), device, dtype)
    vae = random_init(on_meta(lambda: AutoencoderKLLTXVideo(**vae_cfg)), device, dtype)
    f, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    channels = t_cfg["in_channels"]
    tokens = torch.randn(1, f * h * w, channels, device=device, dtype=dtype)   # distilled: no CFG batch
    text = torch.randn(1, 128, t_cfg["caption_channels"], device=device, dtype=dtype)
    mask = torch.ones(1, 128, device=device, dtype=dtype)
    stage = Stage(device)
    step = stage.measure(lambda: transformer(tokens, encoder_hidden_states=text, timestep=torch.tensor(
        [[999.0]], device=device), encoder_attention_mask=mask, num_frames=f, height=h, width=w,
        rope_interpolation_scale=(8 / 25, 32, 32), return_dict=False)[0])
    latents = tokens.reshape(1, f, h, w, channels).permute(0, 4, 1, 2, 3)
    temb = torch.tensor([0.05], device=device, dtype=dtype) if vae_cfg["timestep_conditioning"] else None
    decode = stage.measure(lambda: vae.decode(latents, temb, return_dict=False)[0])
    out = {"geometry": f"{width}x{height}x{frames}", "step": step, "decode": decode}
    if render_steps:
        del tokens, text, mask, latents
        pipe = gpu_pipelines.ltx_pipeline(transformer, vae, device, dtype)
        out["render"] = gpu_pipelines.ltx_render(pipe, stage.measure, width, height, frames, render_steps,
                                                  repeats)
    return out


BENCHES = {"sdxl": bench_sdxl, "wan": bench_wan, "ltx": bench_ltx}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sdxl,wan,ltx")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a code check; CPU is fine)")
    parser.add_argument("--render-steps", type=int, default=2,
                        help="steps of the ours-vs-bare render comparison (0: skip it)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of the render comparison, fastest kept (default 1; 3 with --tiny)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
        print("bench_gpu: no CUDA device on this machine; nothing measured (use --tiny --device cpu to check "
              "the code path)")
        return 0
    dtype = getattr(torch, args.dtype) if device != "cpu" else torch.float32
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
                               "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny, "models": {}}
    repeats = args.repeats or (3 if args.tiny else 1)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in BENCHES:
            parser.error(f"unknown model {name!r}; choose from {sorted(BENCHES)}")
        outcome = BENCHES[name](device, dtype, args.tiny, args.render_steps, repeats)
        for key in ("step", "decode"):
            outcome[key].pop("result", None)
        results["models"][name] = outcome
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"device {results['device']}  dtype {results['dtype']}{'  (tiny configs)' if args.tiny else ''}")
    print(f"{'model':6} {'geometry':16} {'step s':>8} {'step GB':>8} {'decode s':>9} {'decode GB':>9}"
          f" {'ours s':>8} {'ours GB':>8} {'bare s':>8} {'bare GB':>8} {'ours/bare':>9}")
    for name, r in results["models"].items():
        render = r.get("render")
        tail = (f" {render['ours']['s']:8.3f} {render['ours'].get('peak_vram_gb', '-'):>8}"
                f" {render['bare']['s']:8.3f} {render['bare'].get('peak_vram_gb', '-'):>8} {render['ratio']:9.3f}"
                if render else "")
        print(f"{name:6} {r['geometry']:16} {r['step']['s']:8.3f} {r['step'].get('peak_vram_gb', '-'):>8} "
              f"{r['decode']['s']:9.3f} {r['decode'].get('peak_vram_gb', '-'):>9}{tail}")
    if args.render_steps:
        print(f"render: {args.render_steps} steps through our backend (ours) and a bare pipe(...) call (bare) on "
              "the same pipeline object, same process, after one untimed warm-up; fastest of "
              f"{repeats} alternating rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny random-weight LTX-Video pipeline (``LTXConditionPipeline``), built from configs.

The component shapes follow diffusers' own ``LTXConditionPipelineFastTests``
(tests/pipelines/ltx/test_ltx_condition.py) with two changes: the VAE keeps the
real checkpoint's compression (patch 4, three spatio-temporal downsamplings:
32 pixels and 8 frames per latent cell, so renders are ``8k+1`` frames at
multiples of 32 exactly as with the real weights), and the T5 encoder and
tokenizer are built in memory instead of downloaded.  The directory it writes
is what ``LTXConditionPipeline.from_pretrained`` reads for a real diffusers-format
LTX-Video repo; the output is noise.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models.wan import tiny_t5_tokenizer

TEXT_DIM = 32
MARKER = "tiny-ltx-video.ok"


def build_tiny_ltx_video(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny LTX-Video condition pipeline with random weights to ``out_dir``; returns it (idempotent)."""
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return out_dir
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=TEXT_DIM)
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=4,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32,
                                           num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                           relative_attention_max_distance=16, dropout_rate=0.0))
    pipe = LTXConditionPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                                tokenizer=tokenizer, transformer=transformer)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / MARKER).write_text("built by tests/tiny_models/ltx.py\n")
    return out_dir


if __name__ == "__main__":  # python tests/tiny_models/ltx.py DIR — build by hand for a manual run
    import sys

    print(build_tiny_ltx_video(Path(sys.argv[1])))

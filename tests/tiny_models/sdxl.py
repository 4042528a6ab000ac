"""A tiny SDXL base (and refiner) with random weights, shaped like diffusers' own SDXL fast tests.

UNet2DConditionModel with 2/4 channels, a 2-level AutoencoderKL, two 5-layer
CLIP text encoders of width 32 and byte-level CLIP tokenizers with no merges.
2 steps at 64x64 run in well under a second on CPU; the directory is ~11 MB.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

#: Profile options of the tiny model on CPU: 2 steps at the request's size (native 1024² buckets take minutes).
TINY_OPTIONS = {"device": "cpu", "dtype": "float32", "steps": 2, "keep_warm_s": 600, "lock_timeout_s": 0,
                "native_buckets": False}

#: Written into model_index.json's neighbour so a test can tell which tiny build it loaded.
TINY_MARKER = "sparkle-tiny-sdxl"


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte → printable-character map (the alphabet of its BPE).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIPTokenizer over single bytes (512 pieces + 2 specials), built without any download."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    for ch in alphabet:
        vocab.setdefault(ch + "</w>", len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        merges_file = Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=77)


def _text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=vocab_size,
                          hidden_act="gelu", projection_dim=32)


def _unet(*, cross_attention_dim: int, projection_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=projection_dim, cross_attention_dim=cross_attention_dim,
        norm_num_groups=1,
    )


def build_tiny_sdxl(base_dir: Path, refiner_dir: Path | None = None, *, seed: int = 0) -> Path:
    """Write a tiny SDXL base pipeline to ``base_dir`` (and a refiner sharing its VAE/encoder 2 to ``refiner_dir``)."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer(pad_token="!")  # SDXL's second tokenizer pads with "!"
    # time ids: 6 values x 8 dims + pooled text (32)
    unet = _unet(cross_attention_dim=64, projection_dim=6 * 8 + 32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128,
                        norm_num_groups=32)
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer_2)))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(base_dir, safe_serialization=True)
    if refiner_dir is not None:
        # The refiner conditions on encoder 2 only (32 dims) and on an aesthetic score:
        # time ids are 5 values x 8 dims + pooled text (32).
        refiner_unet = _unet(cross_attention_dim=32, projection_dim=5 * 8 + 32)
        refiner = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer_2,
            unet=refiner_unet, scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
        refiner.save_pretrained(refiner_dir, safe_serialization=True)
    return base_dir


def build_tiny_ip_adapter(base_dir: Path, out_dir: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """A random-weight IP-Adapter for the tiny SDXL at ``base_dir`` (as diffusers' ``create_ip_adapter_state_dict``
    builds one) and a tiny CLIP image encoder whose projection matches it: (adapter folder, encoder folder).

    The adapter is ``out_dir/ip-adapter_tiny.safetensors`` with the hub layout's keys
    (``image_proj.*``, ``ip_adapter.<n>.to_k_ip/to_v_ip.weight``), so the backend loads
    it exactly as it loads h94/IP-Adapter's files.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    cross = unet.config.cross_attention_dim
    tensors: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: no image tokens
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        sd = IPAdapterAttnProcessor(hidden_size=hidden, cross_attention_dim=cross, scale=1.0).state_dict()
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = sd["to_k_ip.0.weight"]
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = sd["to_v_ip.0.weight"]
        key_id += 2
    proj = ImageProjection(cross_attention_dim=cross, image_embed_dim=cross, num_image_text_embeds=4).state_dict()
    tensors.update({"image_proj.proj.weight": proj["image_embeds.weight"],
                    "image_proj.proj.bias": proj["image_embeds.bias"],
                    "image_proj.norm.weight": proj["norm.weight"], "image_proj.norm.bias": proj["norm.bias"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "ip-adapter_tiny.safetensors"))
    encoder_dir = out_dir / "image_encoder"
    config = CLIPVisionConfig(hidden_size=32, projection_dim=cross, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, image_size=32, patch_size=4)
    CLIPVisionModelWithProjection(config).save_pretrained(encoder_dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(encoder_dir)
    return out_dir, encoder_dir


if __name__ == "__main__":  # python tests/tiny_models/sdxl.py OUT_DIR — build one by hand for a profile
    import sys

    out = Path(sys.argv[1])
    build_tiny_sdxl(out / "base", out / "refiner")
    print(out)

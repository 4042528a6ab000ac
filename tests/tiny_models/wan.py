"""A tiny random-weight Wan2.1 first-last-frame (FLF2V) pipeline, built from configs.

The component shapes follow diffusers' own ``WanFLFToVideoPipelineFastTests``
(tests/pipelines/wan/test_wan_image_to_video.py), with the two pieces that test
downloads replaced by in-memory ones: a tiny UMT5 encoder (the class the real
checkpoint uses) and a T5 Unigram tokenizer built from a generated vocabulary.
Nothing is fetched from a hub.  The directory it writes is what
``WanImageToVideoPipeline.from_pretrained`` reads for the real 14B checkpoint,
so the backend runs exactly the code a GPU user runs; the output is noise.

What makes it the *first-last-frame* variant: the transformer has ``image_dim``
(CLIP image tokens are cross-attended) and ``pos_embed_seq_len`` = 2 x the CLIP
token count, so it only accepts the two images side by side.
"""

from __future__ import annotations

import string
from pathlib import Path

# CLIP vision tokens per image: (image_size / patch_size)^2 patches + the class token.
CLIP_IMAGE_SIZE = 4
CLIP_TOKENS = (CLIP_IMAGE_SIZE // 1) ** 2 + 1
TEXT_DIM = 32
MARKER = "tiny-wan-flf2v.ok"


def tiny_t5_tokenizer():  # -> transformers.T5Tokenizer
    """A Unigram T5 tokenizer over letters, digits and punctuation; every text tokenizes, nothing is downloaded."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -3.0) for c in chars]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_tiny_wan_flf2v(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny FLF2V pipeline with random weights to ``out_dir`` (save_pretrained layout); returns it.

    Idempotent: a directory that already holds a finished build is returned as is.
    """
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return out_dir
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32,
                                               num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                               relative_attention_max_distance=16, dropout_rate=0.0))
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=4,
        pos_embed_seq_len=2 * CLIP_TOKENS,
    )
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=CLIP_IMAGE_SIZE,
                                                     intermediate_size=16, patch_size=1))
    image_processor = CLIPImageProcessor(crop_size=CLIP_IMAGE_SIZE, size=CLIP_IMAGE_SIZE)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                   image_processor=image_processor, image_encoder=image_encoder,
                                   transformer=transformer, transformer_2=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / MARKER).write_text("built by tests/tiny_models/wan.py\n")
    return out_dir


if __name__ == "__main__":  # python tests/tiny_models/wan.py DIR — build by hand for a manual run
    import sys

    print(build_tiny_wan_flf2v(Path(sys.argv[1])))

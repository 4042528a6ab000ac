"""A Chatterbox checkpoint directory with random weights, in the layout ``ChatterboxTTS.from_local`` reads.

* ``t3_cfg.safetensors`` — T3 with ONE Llama layer (the real one has 30) at the real
  width (1024), so every other tensor has its real shape.  The backend sizes T3's
  depth from the checkpoint, which is how this loads through upstream's from_local.
* ``s3gen.safetensors`` — S3Gen at full size: its sub-modules (S3 tokenizer,
  CAMPPlus, conformer encoder, CFM decoder, HiFT vocoder) have their sizes fixed in
  code, so it cannot be shrunk without patching chatterbox; random weights are fine.
* ``ve.safetensors`` — the voice encoder (random).
* ``tokenizer.json`` — a character-level tokenizer with chatterbox's special tokens,
  built in memory with ``tokenizers`` (no download).
* ``conds.pt`` — the built-in voice: upstream's own ``prepare_conditionals`` run on
  a synthetic voiced reference, saved with ``Conditionals.save``.

Random T3 weights never emit the stop-of-speech token, so callers must cap the
number of generated tokens (the backend's ``max_new_tokens`` option).
Building takes ~15 s and writes ~1.1 GB; do it once per test session.
"""

from __future__ import annotations

import gc
import json
import string
from pathlib import Path

import numpy as np

#: Written beside the weights so a test can tell which build it loaded.
TINY_MARKER = "sparkle-tiny-chatterbox"
TINY_T3_LAYERS = 1
_TINY_LLAMA = "sparkle_tiny_llama"


def voiced_reference(seconds: float = 2.5, sample_rate: int = 24000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A speech-like mono float32 signal: a harmonic voice with a syllable-rate envelope and breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sample_rate
    voice = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) ** 2
    signal = voice * syllables + 0.01 * rng.standard_normal(t.size)
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def build_tokenizer_json(path: Path) -> None:
    """Character-level tokenizer: chatterbox's specials ([STOP]=0, [START]=255 as upstream) plus printable text."""
    from chatterbox.models.tokenizers.tokenizer import EOT, SOT, SPECIAL_TOKENS
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    vocab: dict[str, int] = {EOT: 0, SOT: 255}
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab) - 1 if len(vocab) <= 255 else len(vocab))
    next_id = max(i for i in vocab.values() if i < 255) + 1
    for ch in string.ascii_letters + string.digits + string.punctuation + "àâäçéèêëîïôöùûüÿñ":
        if next_id == 255:
            next_id += 1
        vocab[ch] = next_id
        next_id += 1
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(path))


def build_tiny_chatterbox(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a loadable random-weight Chatterbox checkpoint into ``out_dir``; return it."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS
    from safetensors.torch import save_file

    from sparkle_motion.media import write_wav

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # T3 reads its backbone config by name from a module-level table; a private entry
    # with one layer leaves upstream's own entries untouched.
    LLAMA_CONFIGS[_TINY_LLAMA] = {**LLAMA_CONFIGS["Llama_520M"], "num_hidden_layers": TINY_T3_LAYERS}
    hp = T3Config.english_only()
    hp.llama_config_name = _TINY_LLAMA
    with torch.no_grad():
        t3 = T3(hp).eval()
        s3gen = S3Gen().eval()
        ve = VoiceEncoder().eval()

    def contiguous(state: dict) -> dict:
        return {k: v.detach().contiguous() for k, v in state.items()}

    save_file(contiguous(t3.state_dict()), str(out_dir / "t3_cfg.safetensors"))
    save_file(contiguous(s3gen.state_dict()), str(out_dir / "s3gen.safetensors"))
    save_file(contiguous(ve.state_dict()), str(out_dir / "ve.safetensors"))
    build_tokenizer_json(out_dir / "tokenizer.json")

    reference = out_dir / "reference.wav"
    write_wav(reference, voiced_reference(), 24000)
    model = ChatterboxTTS(t3, s3gen, ve, EnTokenizer(str(out_dir / "tokenizer.json")), "cpu")
    model.prepare_conditionals(str(reference), exaggeration=0.5)
    model.conds.save(out_dir / "conds.pt")
    reference.unlink()
    (out_dir / "tiny.json").write_text(json.dumps({"marker": TINY_MARKER, "t3_layers": TINY_T3_LAYERS}),
                                       encoding="utf-8")
    del model, t3, s3gen, ve
    LLAMA_CONFIGS.pop(_TINY_LLAMA, None)
    gc.collect()
    return out_dir


if __name__ == "__main__":
    # Tests build in a child process: the ~3 GB of construction-time memory goes back
    # to the OS when it exits, and the test process never imports torch for it.
    import sys

    build_tiny_chatterbox(Path(sys.argv[1]))

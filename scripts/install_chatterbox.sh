#!/usr/bin/env bash
# Installs Chatterbox TTS (backend `chatterbox` of tts_chatterbox) into an existing
# venv that already holds the GPU stack (torch, diffusers, transformers).
#
# Why not `pip install chatterbox-tts`: 0.1.7 pins torch==2.6.0, torchaudio==2.6.0,
# diffusers==0.29.0, transformers==5.2.0, safetensors==0.5.3 and numpy<2, plus
# gradio/spacy-pkuseg/pykakasi for its demo apps and CJK front-ends.  Resolving
# those would replace the shared torch and drop diffusers to a version without the
# Wan pipeline.  Its code runs on the stack we ship (torch 2.14.1, torchaudio 2.11.0,
# diffusers 0.42, transformers 5.x, numpy 2), so the packages whose metadata would
# pull another torch go in with --no-deps and the rest of what it imports is
# installed here explicitly.  Every resolving step runs under a constraints file
# that freezes the packages this venv already has, so pip fails loudly instead of
# swapping them.
#
# Usage: bash scripts/install_chatterbox.sh [VENV]      (default: .venv)
# A deployment that wants upstream's exact pins runs this tool in its own venv
# instead: see docs/tools/tts_chatterbox.md ("Running in a separate venv").
set -euo pipefail

VENV="${1:-.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "install_chatterbox: no interpreter at $PY (create the venv first: scripts/setup.sh)" >&2
  exit 2
fi

# The exact versions this recipe was verified with.
CHATTERBOX_VERSION=0.1.7
TORCHAUDIO_VERSION=2.11.0   # the torchaudio built against torch 2.11+; imports beside torch 2.14
NO_DEPS=(                   # their metadata pins or pulls torch/torchaudio/transformers/diffusers
  "chatterbox-tts==$CHATTERBOX_VERSION"
  "torchaudio==$TORCHAUDIO_VERSION"
  "s3tokenizer==0.3.0"      # also drags in pre-commit; its real needs are listed below
  "conformer==0.3.2"        # upstream's pin; declares bare torch
  "resemble-perth==1.0.1"   # the Perth watermarker; declares nothing, imports the rest
)
RUNTIME=(                   # what the packages above import, resolved normally
  "librosa==0.11.0"         # upstream's pin (audio loading, resampling, mel filters)
  "setuptools<81"           # perth imports pkg_resources, removed in setuptools 81
  "omegaconf>=2.3"
  "pyloudnorm>=0.1.1"
  "einops>=0.8"
  "onnx>=1.16"
  "tqdm>=4.60"
  "scipy>=1.10"
)

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "install_chatterbox: torch is not installed in $VENV; install the GPU stack first" \
       "(torch==2.14.1 torchvision==0.29.1, then diffusers/transformers)" >&2
  exit 2
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# Freeze what is already there and must not move.
"$PY" - "$constraints" <<'EOF'
import sys
from importlib import metadata

frozen = ("torch", "torchvision", "numpy", "diffusers", "transformers", "safetensors",
          "huggingface_hub", "tokenizers", "accelerate")
lines = []
for name in frozen:
    try:
        lines.append(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
EOF
echo "install_chatterbox: keeping $(tr '\n' ' ' < "$constraints")"

# pip then reports chatterbox-tts's unmet pins (torch==2.6.0, diffusers==0.29.0, gradio...):
# that list is expected; the import check below is what must pass.
"$PY" -m pip install -q --no-deps "${NO_DEPS[@]}"
"$PY" -m pip install -q -c "$constraints" "${RUNTIME[@]}"

# Prove the import chain the backend uses, including the real watermarker
# (perth silently degrades to PerthImplicitWatermarker=None when pkg_resources is missing).
"$PY" - <<'EOF'
import importlib.metadata as md

import perth
import torch
import torchaudio

if perth.PerthImplicitWatermarker is None:
    raise SystemExit("install_chatterbox: perth.PerthImplicitWatermarker is unavailable (is setuptools < 81?)")
from chatterbox.tts import ChatterboxTTS  # noqa: F401
from chatterbox.mtl_tts import ChatterboxMultilingualTTS  # noqa: F401

print("install_chatterbox: ok — chatterbox-tts", md.version("chatterbox-tts"), "torch", torch.__version__,
      "torchaudio", torchaudio.__version__, "numpy", md.version("numpy"))
EOF

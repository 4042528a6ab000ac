"""Backend ``chatterbox``: Resemble AI's Chatterbox TTS (English, or multilingual for other languages).

The model is held by :func:`sparkle_motion.gpu_utils.model_context` (device lock,
warm cache, typed OOM, telemetry).  Text is cut into chunks of at most 280
characters with :func:`~function_tools.tts_chatterbox.text.split_text`, each
chunk is generated, trimmed and joined with the same pauses as the espeak
backend, resampled to the requested rate and then watermarked with Perth at that
rate — the watermark is applied to exactly the samples that are delivered.

Generation mirrors ``ChatterboxTTS.generate`` / ``ChatterboxMultilingualTTS.generate``
(punctuation normalisation, CFG text batch, T3 sampling, S3Gen vocoding) but
passes ``max_new_tokens`` and ``n_cfm_timesteps`` through: upstream hard-codes
1000 tokens, which a stuck sampler (or random test weights, which never emit the
stop token) spends in full.

Profile options (``tools.tts_chatterbox.options``), all optional:

=====================  ==========================================================
device                 auto | cpu | cuda | cuda:N | mps (default auto)
keep_warm_s            seconds the model stays loaded after a call (300)
lock_timeout_s         wait this long for a device held by another process (0)
preload                load the English model before /ready (true)
max_new_tokens         speech-token cap per chunk, 1..4096 (1000 ≈ 40 s of audio)
n_cfm_timesteps        S3Gen flow-matching steps, 1..50 (upstream: 10)
max_chunk_chars        40..280 (280)
exaggeration           default emotion exaggeration, 0..2 (0.5)
cfg_weight             default CFG weight, 0..1 (0.5)
temperature, top_p, min_p, repetition_penalty   T3 sampling (upstream defaults)
multilingual_model     HF id or local dir of the multilingual checkpoint
                       (default ResembleAI/chatterbox)
voices                 {voice_id | character_id | character name: artifact URI of
                       a reference clip} — per-character voices
simulate_oom           load | inference — TEST HOOK: raises torch's CUDA OOM error
                       at that stage so the typed-error path can be exercised
=====================  ==========================================================
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from function_tools.tts_chatterbox.dsp import resample, trim_silence
from function_tools.tts_chatterbox.models import TtsChatterboxRequest, TtsChatterboxResponse, WordTiming
from function_tools.tts_chatterbox.pauses import pause_after
from function_tools.tts_chatterbox.text import DEFAULT_MAX_CHUNK_CHARS, TextChunk, split_text
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError
from sparkle_motion.gpu_utils import (LoadSpec, MemoryOptions, ModelHandle, model_context, resolve_device,
                                      resolve_plan)
from sparkle_motion.media import probe, write_wav
from sparkle_motion.services import ToolContext

DEFAULT_MULTILINGUAL_MODEL = "ResembleAI/chatterbox"
#: Chatterbox's conditioning uses the first 10 s of a reference; longer clips only cost decoding.
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 60.0
_CONDS_CACHE_SIZE = 16
_OPTION_FIELD = "tools.tts_chatterbox.options"
_KNOWN_OPTIONS = frozenset({
    "device", "dtype", "keep_warm_s", "lock_timeout_s", "preload", "max_new_tokens", "n_cfm_timesteps",
    "max_chunk_chars", "exaggeration", "cfg_weight", "temperature", "top_p", "min_p", "repetition_penalty",
    "multilingual_model", "voices", "simulate_oom", "memory",
})
#: The memory-plan table of Chatterbox (sparkle_motion.gpu.memory_plans).
PLAN_FAMILY = "chatterbox"
# The files each checkpoint kind needs, as upstream's from_local reads them.
_ENGLISH_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")
_MULTILINGUAL_FILES = ("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json")
_T3_LAYER_KEY = re.compile(r"^tfmr\.(?:layers|h)\.(\d+)\.")
_WORD_RE = re.compile(r"\w[\w'’]*", re.UNICODE)
TIMINGS_NOTE = ("chatterbox reports no word or phoneme timings: word times are estimated in proportion to word "
                "length within each chunk's audio (estimated=true)")


def _option(options: Mapping[str, Any], name: str, default: Any, kind: type, low: float | None = None,
            high: float | None = None) -> Any:
    value = options.get(name, default)
    if value is None:
        return None
    try:
        if kind is bool and not isinstance(value, bool):
            raise TypeError
        value = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name} must be a {kind.__name__} (got {value!r})",
                          field=f"{_OPTION_FIELD}.{name}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"option {name} must be within {low}-{high} (got {value!r})",
                          field=f"{_OPTION_FIELD}.{name}")
    return value


@dataclass(frozen=True)
class Sampling:
    """T3 sampling controls (upstream's defaults; repetition_penalty None = the model kind's default)."""

    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.05
    repetition_penalty: float | None = None


@dataclass(frozen=True)
class ChatterboxOptions:
    device: str = "auto"
    keep_warm_s: float = 300.0
    lock_timeout_s: float = 0.0
    preload: bool = True
    max_new_tokens: int = 1000
    n_cfm_timesteps: int | None = None
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    sampling: Sampling = field(default_factory=Sampling)
    multilingual_model: str = DEFAULT_MULTILINGUAL_MODEL
    voices: dict[str, str] = field(default_factory=dict)
    simulate_oom: str | None = None
    memory: MemoryOptions = field(default_factory=MemoryOptions)

    @classmethod
    def from_profile(cls, options: Mapping[str, Any]) -> ChatterboxOptions:
        unknown = sorted(set(options) - _KNOWN_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown chatterbox options {unknown}; known: {sorted(_KNOWN_OPTIONS)}",
                              field=_OPTION_FIELD)
        # Chatterbox runs in float32 upstream (S3Gen's vocoder is not fp16-safe), and it is no
        # diffusers pipeline, so none of the memory switches apply: refuse rather than ignore.
        if options.get("dtype") not in (None, "auto", "float32", "fp32"):
            raise ConfigError("chatterbox runs in float32 only", field=f"{_OPTION_FIELD}.dtype")
        memory = MemoryOptions.from_options(options)
        if memory.cpu_offload or memory.vae_tiling or memory.vae_slicing or memory.attention or memory.compile:
            raise ConfigError("chatterbox takes only memory: auto, or {plan, estimate_gb}: it is no diffusers "
                              "pipeline, so the offload and VAE switches do not apply", field=f"{_OPTION_FIELD}.memory")
        simulate = options.get("simulate_oom")
        if simulate not in (None, "load", "inference"):
            raise ConfigError("option simulate_oom must be load or inference (a test hook)",
                              field=f"{_OPTION_FIELD}.simulate_oom")
        voices = options.get("voices") or {}
        if not isinstance(voices, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in voices.items()):
            raise ConfigError("option voices must map a voice id, character id or character name to an "
                              "artifact URI", field=f"{_OPTION_FIELD}.voices")
        repetition = _option(options, "repetition_penalty", None, float, 1.0, 10.0)
        return cls(
            device=str(options.get("device") or "auto"),
            keep_warm_s=_option(options, "keep_warm_s", 300.0, float, 0.0, 86400.0),
            lock_timeout_s=_option(options, "lock_timeout_s", 0.0, float, 0.0, 3600.0),
            preload=_option(options, "preload", True, bool),
            max_new_tokens=_option(options, "max_new_tokens", 1000, int, 1, 4096),
            n_cfm_timesteps=_option(options, "n_cfm_timesteps", None, int, 1, 50),
            max_chunk_chars=_option(options, "max_chunk_chars", DEFAULT_MAX_CHUNK_CHARS, int, 40,
                                    DEFAULT_MAX_CHUNK_CHARS),
            exaggeration=_option(options, "exaggeration", 0.5, float, 0.0, 2.0),
            cfg_weight=_option(options, "cfg_weight", 0.5, float, 0.0, 1.0),
            sampling=Sampling(temperature=_option(options, "temperature", 0.8, float, 0.05, 5.0),
                              top_p=_option(options, "top_p", 1.0, float, 0.01, 1.0),
                              min_p=_option(options, "min_p", 0.05, float, 0.0, 1.0),
                              repetition_penalty=repetition),
            multilingual_model=str(options.get("multilingual_model") or DEFAULT_MULTILINGUAL_MODEL),
            voices=dict(voices),
            simulate_oom=simulate,
            memory=memory,
        )


# --------------------------------------------------------------------------- loading

def _t3_depth(checkpoint: Path) -> int | None:
    """Number of backbone layers in a T3 checkpoint (from the safetensors header; no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as handle:
        layers = {int(m.group(1)) for key in handle.keys() if (m := _T3_LAYER_KEY.match(key))}
    return max(layers) + 1 if layers else None


_depth_lock = threading.Lock()


@contextmanager
def _t3_depth_from(checkpoint: Path) -> Iterator[int | None]:
    """Build T3 with the checkpoint's depth while upstream's from_local runs.

    T3 takes its backbone size from the module-level ``LLAMA_CONFIGS`` table, so a
    checkpoint with fewer layers than the published 30 (distilled, or the tests'
    random 1-layer build) would fail its strict ``load_state_dict``.  The entry is
    restored afterwards; for the published weights nothing changes.
    """
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    depth = _t3_depth(checkpoint)
    entry = LLAMA_CONFIGS["Llama_520M"]
    with _depth_lock:
        original = entry["num_hidden_layers"]
        if depth is not None and depth != original:
            entry["num_hidden_layers"] = depth
        try:
            yield depth
        finally:
            entry["num_hidden_layers"] = original


def _checkpoint_dir(model: str, files: tuple[str, ...], field_name: str) -> Path:
    """A local directory holding ``files``: ``model`` itself, or its Hugging Face snapshot (cache first)."""
    path = Path(model).expanduser()
    if path.is_dir() or model.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ConfigError(f"chatterbox model directory not found: {path}", field=field_name)
        directory = path
    else:
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(repo_id=model, allow_patterns=[*files, "conds.pt", "Cangjie5_TC.json"]))
        except Exception as exc:  # offline without a cache, unknown repo, auth: all a configuration problem
            raise ConfigError(f"cannot fetch chatterbox weights {model!r}: {exc}", field=field_name,
                              context={"exception_type": type(exc).__name__}) from exc
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"chatterbox checkpoint {directory} lacks {', '.join(missing)}", field=field_name,
                          context={"expected": list(files)})
    return directory


def _simulated_oom(stage: str) -> BaseException:
    import torch

    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated at {stage} by option simulate_oom)")


def _require_watermarker() -> None:
    import perth

    if getattr(perth, "PerthImplicitWatermarker", None) is None:
        raise ConfigError("the Perth watermarker is unavailable (resemble-perth needs pkg_resources: "
                          "setuptools<81); run scripts/install_chatterbox.sh",
                          context={"package": "resemble-perth"})


@dataclass(frozen=True)
class ModelChoice:
    """Which checkpoint speaks a request: the English model or the multilingual one."""

    multilingual: bool
    model: str
    language_id: str | None

    @property
    def key(self) -> str:
        return f"chatterbox-{'mtl' if self.multilingual else 'en'}:{self.model}"

    def loader(self, simulate_oom: str | None) -> Callable[[LoadSpec], Any]:
        field_name = (f"{_OPTION_FIELD}.multilingual_model" if self.multilingual else "tools.tts_chatterbox.model")

        def load(spec: LoadSpec) -> Any:
            if simulate_oom == "load":
                raise _simulated_oom("load")
            if self.multilingual:
                from chatterbox.mtl_tts import ChatterboxMultilingualTTS as cls
                files, t3_file = _MULTILINGUAL_FILES, "t3_mtl23ls_v2.safetensors"
            else:
                from chatterbox.tts import ChatterboxTTS as cls
                files, t3_file = _ENGLISH_FILES, "t3_cfg.safetensors"
            directory = _checkpoint_dir(self.model, files, field_name)
            with _t3_depth_from(directory / t3_file) as depth:
                model = cls.from_local(directory, spec.device)
            if depth is not None and depth != 30:
                spec.record(f"t3_layers_{depth}")  # visible in telemetry: this is not the published depth
            if type(model.watermarker).__name__ != "PerthImplicitWatermarker":
                raise ConfigError("chatterbox did not get the Perth watermarker", context={
                    "watermarker": type(model.watermarker).__name__})
            return model

        return load


# --------------------------------------------------------------------------- synthesis

@dataclass
class ChunkAudio:
    samples: np.ndarray  # float32 mono at the model's rate, silence trimmed
    generated_tokens: int
    speech_tokens: int
    stopped: bool  # the sampler emitted stop-of-speech (else the token cap cut it)


def _generate_chunk(model: Any, text: str, conds: Any, choice: ModelChoice, *, exaggeration: float,
                    cfg_weight: float, sampling: Sampling, max_new_tokens: int,
                    n_cfm_timesteps: int | None, on_token: Callable[[], None] | None = None) -> ChunkAudio:
    """One chunk through T3 (speech tokens) and S3Gen (audio).

    ``on_token`` runs once per forward pass of T3's transformer — once per sampled
    token, upstream's token loop — through a forward hook, so a job shows token
    progress and a cancel (raised from it) stops the sampler at the next token.
    """
    import torch
    import torch.nn.functional as F
    from chatterbox.models.s3tokenizer import SPEECH_VOCAB_SIZE, drop_invalid_tokens
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    if choice.multilingual:
        from chatterbox.mtl_tts import punc_norm
        tokens = model.tokenizer.text_to_tokens(punc_norm(text), language_id=choice.language_id)
        repetition = sampling.repetition_penalty or 2.0
    else:
        from chatterbox.tts import punc_norm
        tokens = model.tokenizer.text_to_tokens(punc_norm(text))
        repetition = sampling.repetition_penalty or 1.2
    hp = model.t3.hp
    # T3's sampler always runs a conditional and an unconditional row (cfg_weight 0 just ignores
    # the second); upstream's English generate forgets the second row when cfg_weight == 0.
    tokens = tokens.to(model.device)
    tokens = torch.cat([tokens, tokens], dim=0)
    tokens = F.pad(F.pad(tokens, (1, 0), value=hp.start_text_token), (0, 1), value=hp.stop_text_token)
    t3_cond = T3Cond(speaker_emb=conds.t3.speaker_emb,
                     cond_prompt_speech_tokens=conds.t3.cond_prompt_speech_tokens,
                     emotion_adv=exaggeration * torch.ones(1, 1, 1)).to(device=model.device)
    hook = model.t3.tfmr.register_forward_hook(lambda *_: on_token()) if on_token is not None else None
    try:
        with torch.inference_mode():
            generated = model.t3.inference(t3_cond=t3_cond, text_tokens=tokens, max_new_tokens=max_new_tokens,
                                           temperature=sampling.temperature, cfg_weight=cfg_weight,
                                           repetition_penalty=repetition, min_p=sampling.min_p,
                                           top_p=sampling.top_p)[0]
    finally:
        if hook is not None:
            hook.remove()
    with torch.inference_mode():
        stopped = bool((generated == hp.stop_speech_token).any())
        speech = drop_invalid_tokens(generated)
        speech = speech[speech < SPEECH_VOCAB_SIZE].to(model.device)
        if speech.numel() == 0:
            raise BackendError("chatterbox generated no speech tokens for a chunk",
                               context={"chunk_chars": len(text), "generated_tokens": int(generated.numel())})
        wav, _ = model.s3gen.inference(speech_tokens=speech, ref_dict=conds.gen, n_cfm_timesteps=n_cfm_timesteps)
    samples = wav.squeeze(0).detach().float().cpu().numpy()
    kept, _, _ = trim_silence(samples, model.sr)
    return ChunkAudio(kept.astype(np.float32), int(generated.numel()), int(speech.numel()), stopped)


def token_counter(ctx: ToolContext, phase: str, cap: int) -> Callable[[], None]:
    """An ``on_token`` that reports ``n/cap`` tokens of ``phase`` (the cap: the sampler usually stops sooner)."""
    count = 0

    def on_token() -> None:
        nonlocal count
        count += 1
        ctx.progress(min(count, cap), cap, phase)

    return on_token


def estimate_word_timings(chunk: TextChunk, start_s: float, end_s: float) -> list[WordTiming]:
    """Spread a chunk's words over its audio in proportion to their length (plus one for the gap)."""
    tokens = [(m.start(), m.end()) for m in _WORD_RE.finditer(chunk.text)]
    if not tokens or end_s <= start_s:
        return []
    weights = np.cumsum([0] + [b - a + 1 for a, b in tokens], dtype=np.float64)
    bounds = start_s + (end_s - start_s) * weights / weights[-1]
    timings = []
    for k, (a, b) in enumerate(tokens):
        # the "+1" share of each word is the gap after it, not speech
        word_end = bounds[k] + (bounds[k + 1] - bounds[k]) * (b - a) / (b - a + 1)
        timings.append(WordTiming(word=chunk.text[a:b], start_s=round(float(bounds[k]), 4),
                                  end_s=round(float(word_end), 4), char_start=chunk.offset + a, estimated=True))
    return timings


@dataclass
class VoiceSource:
    """Where the voice of a request comes from: a reference clip or the checkpoint's built-in voice."""

    kind: str  # "reference" | "builtin"
    uri: str | None = None
    sha256: str | None = None
    path: Path | None = None
    matched: str | None = None  # request field or profile voices key that chose it

    @property
    def voice_id(self) -> str:
        return f"chatterbox/ref-{self.sha256[:12]}" if self.kind == "reference" and self.sha256 else "chatterbox/builtin"


class ChatterboxBackend:
    """FunctionTool backend: Chatterbox under ``model_context``; ``invoke()`` speaks one request."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.options = ChatterboxOptions.from_profile(profile.options)
        if not profile.model:
            raise ConfigError("the chatterbox backend needs a model (HF id or local directory)",
                              field="tools.tts_chatterbox.model")
        self._conds: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.version = "unknown"

    def load(self) -> None:
        import torch  # noqa: F401  (fail here, before /ready, when the GPU stack is missing)

        _require_watermarker()
        resolve_plan(PLAN_FAMILY, self.options.memory, resolve_device(self.options.device))  # refuse at start
        self.version = importlib_metadata.version("chatterbox-tts")
        if self.options.preload:
            with self._model(ModelChoice(False, self.profile.model, None)):
                pass

    @contextmanager
    def _model(self, choice: ModelChoice) -> Iterator[ModelHandle]:
        with model_context(choice.key, choice.loader(self.options.simulate_oom), device=self.options.device,
                           dtype="float32", keep_warm_s=self.options.keep_warm_s,
                           lock_timeout_s=self.options.lock_timeout_s, memory=self.options.memory,
                           plan_family=PLAN_FAMILY, tool="tts_chatterbox") as handle:
            if not handle.telemetry["reused"]:
                self._conds.clear()  # conditionals live on the previous model's device and weights
            yield handle

    # ------------------------------------------------------------------ request → choices

    def choose_model(self, request: TtsChatterboxRequest) -> ModelChoice:
        primary = request.voice.language.split("-")[0].lower()
        if primary == "en":
            return ModelChoice(False, self.profile.model, None)
        from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

        if primary not in SUPPORTED_LANGUAGES:
            raise InvalidInputError(f"language {request.voice.language!r} is not spoken by Chatterbox; supported: "
                                    f"{', '.join(sorted(SUPPORTED_LANGUAGES))}", field="voice.language")
        return ModelChoice(True, self.options.multilingual_model, primary)

    def choose_voice(self, request: TtsChatterboxRequest, ctx: ToolContext) -> VoiceSource:
        if request.reference_audio_uri:
            return self._reference(request.reference_audio_uri, ctx, "reference_audio_uri", "reference_audio_uri")
        voice = request.voice
        for key in (voice.voice_id, voice.character_id, voice.character_name):
            if key and key in self.options.voices:
                try:
                    return self._reference(self.options.voices[key], ctx, f"options.voices.{key}", f"voices.{key}")
                except InvalidInputError as exc:  # the profile is wrong, not the request
                    raise ConfigError(f"profile voice {key!r}: {exc.message}", field=f"{_OPTION_FIELD}.voices.{key}",
                                      context=exc.context) from exc
        return VoiceSource("builtin")

    @staticmethod
    def _reference(uri: str, ctx: ToolContext, field_name: str, matched: str) -> VoiceSource:
        manifest, path = ctx.resolve_input(uri, field_name)
        if not manifest.media_type.startswith("audio/"):
            raise InvalidInputError(f"reference audio must be audio (got {manifest.media_type})", field=field_name)
        if manifest.size_bytes > MAX_REFERENCE_BYTES:
            raise InvalidInputError(f"reference audio is {manifest.size_bytes} bytes; the limit is "
                                    f"{MAX_REFERENCE_BYTES}", field=field_name)
        info = probe(path, field_name=field_name)
        stream = info.first("audio")
        duration = (stream.duration_s if stream else None) or info.duration_s or 0.0
        if stream is None or not MIN_REFERENCE_S <= duration <= MAX_REFERENCE_S:
            raise InvalidInputError(f"reference audio needs {MIN_REFERENCE_S:g}-{MAX_REFERENCE_S:g} s of sound "
                                    f"(got {duration:.2f} s{'' if stream else ', no audio stream'})", field=field_name)
        return VoiceSource("reference", uri=manifest.uri, sha256=manifest.sha256, path=path, matched=matched)

    def _conditionals(self, model: Any, choice: ModelChoice, voice: VoiceSource, exaggeration: float) -> Any:
        if voice.kind == "builtin":
            if model.conds is None:
                raise InvalidInputError("this checkpoint has no built-in voice (conds.pt); give reference_audio_uri "
                                        "or map the character in the profile's voices", field="reference_audio_uri")
            return model.conds
        key = (choice.key, voice.sha256 or "")
        if key in self._conds:
            self._conds.move_to_end(key)
            return self._conds[key]
        # prepare_conditionals replaces model.conds; keep the built-in voice for later requests.
        builtin = model.conds
        try:
            model.prepare_conditionals(str(voice.path), exaggeration=exaggeration)
            conds = model.conds
        finally:
            model.conds = builtin
        self._conds[key] = conds
        while len(self._conds) > _CONDS_CACHE_SIZE:
            self._conds.popitem(last=False)
        return conds

    # ------------------------------------------------------------------ invoke

    def invoke(self, request: TtsChatterboxRequest, ctx: ToolContext) -> TtsChatterboxResponse:
        opts = self.options
        choice = self.choose_model(request)
        voice = self.choose_voice(request, ctx)
        chunks = split_text(request.text, opts.max_chunk_chars)
        if not chunks:
            raise InvalidInputError("has nothing to say after splitting", field="text")
        exaggeration = opts.exaggeration if request.exaggeration is None else request.exaggeration
        cfg_weight = opts.cfg_weight if request.cfg_weight is None else request.cfg_weight

        import torch

        started = time.perf_counter()
        pieces: list[np.ndarray] = []
        words: list[WordTiming] = []
        chunk_stats: list[dict[str, Any]] = []
        with self._model(choice) as handle:
            model = handle.model
            native_rate = int(model.sr)
            with handle.inference():
                if opts.simulate_oom == "inference":
                    raise _simulated_oom("inference")
                conds = self._conditionals(model, choice, voice, exaggeration)
                offset_s = 0.0
                for index, chunk in enumerate(chunks):
                    # one seed per chunk: a chunk's audio does not depend on how long the previous one ran
                    torch.manual_seed((request.seed + index) % 2**63)
                    audio = _generate_chunk(model, chunk.text, conds, choice, exaggeration=exaggeration,
                                            cfg_weight=cfg_weight, sampling=opts.sampling,
                                            max_new_tokens=opts.max_new_tokens, n_cfm_timesteps=opts.n_cfm_timesteps,
                                            on_token=token_counter(ctx, f"chunk {index + 1}/{len(chunks)} tokens",
                                                                   opts.max_new_tokens))
                    chunk_s = len(audio.samples) / native_rate
                    words += estimate_word_timings(chunk, offset_s, offset_s + chunk_s)
                    pieces.append(audio.samples)
                    offset_s += chunk_s
                    chunk_stats.append({"chars": len(chunk.text), "generated_tokens": audio.generated_tokens,
                                        "speech_tokens": audio.speech_tokens, "stopped": audio.stopped,
                                        "audio_s": round(chunk_s, 4)})
                    if not audio.stopped:
                        ctx.log.warning("chatterbox_token_cap", chunk=index, max_new_tokens=opts.max_new_tokens)
                    if index + 1 < len(chunks):
                        silence = pause_after(chunk, native_rate)
                        pieces.append(silence)
                        offset_s += len(silence) / native_rate
                synth_s = time.perf_counter() - started
                t0 = time.perf_counter()
                out = resample(np.concatenate(pieces), native_rate, request.sample_rate)
                resample_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                marked = np.asarray(model.watermarker.apply_watermark(out, sample_rate=request.sample_rate),
                                    dtype=np.float32)
                watermark_s = time.perf_counter() - t0
        telemetry = dict(handle.telemetry)
        # the STFT round trip may shift the length by a few samples; deliver the resampled length
        samples = np.zeros(len(out), dtype=np.float32)
        samples[: min(len(out), len(marked))] = marked[: len(out)]
        samples = np.clip(samples, -1.0, 1.0)
        duration = len(samples) / request.sample_rate
        for w in words:
            w.start_s, w.end_s = min(w.start_s, duration), min(w.end_s, duration)
        return self._respond(request, ctx, choice, voice, samples, duration, words, chunk_stats, telemetry,
                             exaggeration=exaggeration, cfg_weight=cfg_weight,
                             stage_times={"synth_s": round(synth_s, 6), "resample_s": round(resample_s, 6),
                                          "watermark_s": round(watermark_s, 6)})

    def _respond(self, request: TtsChatterboxRequest, ctx: ToolContext, choice: ModelChoice, voice: VoiceSource,
                 samples: np.ndarray, duration: float, words: list[WordTiming], chunk_stats: list[dict[str, Any]],
                 telemetry: dict[str, Any], *, exaggeration: float, cfg_weight: float,
                 stage_times: dict[str, float]) -> TtsChatterboxResponse:
        staged = ctx.staging_path(".wav")
        t0 = time.perf_counter()
        write_wav(staged, samples, request.sample_rate)
        engine = f"chatterbox-tts {self.version} ({'multilingual' if choice.multilingual else 'english'})"
        synth_time_s = round(stage_times["synth_s"] + stage_times["resample_s"] + stage_times["watermark_s"], 6)
        ignored = {name: value for name in ("style", "rate", "pitch")
                   if (value := getattr(request.voice, name)) is not None}
        opts = self.options
        metadata: dict[str, Any] = {
            "duration_s": round(duration, 4),
            "sample_rate": request.sample_rate,
            "voice_id": voice.voice_id,
            "engine": engine,
            "synth_time_s": synth_time_s,
            "watermarked": True,
            "watermark": "perth-implicit",
            "seed": request.seed,
            "steps": opts.n_cfm_timesteps or 10,
            "model_id": choice.model,
            **{k: telemetry.get(k) for k in ("model_key", "device", "dtype", "load_s", "inference_s", "reused",
                                             "load_count", "applied_memory_options", "memory_plan",
                                             "load_peak_rss_mb")},
            **({"peak_vram_mb": telemetry["peak_vram_mb"]} if "peak_vram_mb" in telemetry else {}),
            "params": {
                "text": request.text,
                "voice": request.voice.model_dump(mode="json"),
                "sample_rate": request.sample_rate,
                "language_id": choice.language_id or "en",
                "exaggeration": exaggeration,
                "cfg_weight": cfg_weight,
                "temperature": opts.sampling.temperature, "top_p": opts.sampling.top_p, "min_p": opts.sampling.min_p,
                "repetition_penalty": opts.sampling.repetition_penalty,
                "max_new_tokens": opts.max_new_tokens,
                "n_cfm_timesteps": opts.n_cfm_timesteps or 10,
                "voice_source": {"kind": voice.kind, "uri": voice.uri, "sha256": voice.sha256, "matched": voice.matched},
                "ignored": {"fields": ignored, "reason": "chatterbox takes its voice from the reference audio; "
                                                        "style, rate and pitch have no control"} if ignored else {},
            },
            "chunks": len(chunk_stats),
            "chunk_stats": chunk_stats,
            "token_cap_hit": any(not c["stopped"] for c in chunk_stats),
            "words": [w.model_dump() for w in words],
            "phonemes": [],
            "timings_note": TIMINGS_NOTE,
            "timings": stage_times,
        }
        manifest = ctx.put_output(request, "dialogue_audio", staged, "audio/wav", metadata,
                                  media={"duration_s": round(duration, 4), "sample_rate": request.sample_rate},
                                  move=True)
        store_s = time.perf_counter() - t0
        return TtsChatterboxResponse(
            artifacts=[manifest], audio_uri=manifest.uri, duration_s=round(duration, 4),
            sample_rate=request.sample_rate, voice_id=voice.voice_id, engine=engine, synth_time_s=synth_time_s,
            watermarked=True, words=words, phonemes=[], timings_note=TIMINGS_NOTE,
            timings={**stage_times, "load_s": float(telemetry.get("load_s") or 0.0),
                     "inference_s": float(telemetry.get("inference_s") or 0.0), "store_s": round(store_s, 6)},
        )

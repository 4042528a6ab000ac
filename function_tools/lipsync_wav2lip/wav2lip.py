"""The `wav2lip` backend: run a user-provided Wav2Lip checkout as a subprocess.

Wav2Lip has no maintained PyPI package, and its ``inference.py`` is a script,
not a library, with pins of its own (old librosa, opencv).  So the deployment
provides a checkout, its checkpoint and the interpreter that can run it
(profile options ``wav2lip_dir``, ``checkpoint_path``, ``python``), and this
backend drives upstream's command line under the shared device lock:

* inputs are analysed exactly as the `mux` backend does (same fit rules, same
  422s), and upstream gets shell-safe relative paths in a private working
  directory (it writes ``temp/result.avi`` relative to its cwd and shells out to
  a bare ``ffmpeg``, which we put on its PATH);
* the audio it hears is the fitted dialogue plus a short silent tail: upstream
  renders one frame per 0.2 s mel window, so without the tail it drops the
  clip's last frames;
* its output is re-encoded to the input's exact geometry, frame rate and frame
  count, with the fitted dialogue as AAC, and the alignment map says
  ``lip_motion: true``;
* failures are typed: a timeout (the process group is killed), a crash (500
  with the stderr tail), a CUDA OOM (ModelOOMError), and upstream's "Face not
  detected!" — which by default falls back to the `mux` backend, recorded in
  the response and in every output's metadata (``fallback`` and
  ``lip_motion: false``), never silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from function_tools.lipsync_wav2lip.alignment import build_segments
from function_tools.lipsync_wav2lip.audio_mux import checked_ffmpeg, mux_dialogue
from function_tools.lipsync_wav2lip.inputs import VideoFacts, analyse_lipsync_inputs
from function_tools.lipsync_wav2lip.models import (
    AlignmentMap,
    BackendFallback,
    LipsyncRequest,
    LipsyncResponse,
)
from function_tools.lipsync_wav2lip.outputs import store_lipsync_outputs
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, ConfigError, InvalidInputError
from sparkle_motion.gpu_utils import (
    ModelOOMError,
    device_lock,
    is_oom_error,
    memory_snapshot,
    resolve_device,
)
from sparkle_motion.media import probe, run_ffmpeg
from sparkle_motion.services import ToolContext

#: Upstream's own words when a frame has no face (face_detect() in inference.py).
FACE_NOT_DETECTED_MARKER = "Face not detected!"
#: Flags this backend passes; a checkout whose --help lacks one is too old (``--nosmooth`` came late).
REQUIRED_FLAGS = ("--checkpoint_path", "--face", "--audio", "--outfile", "--fps", "--pads", "--resize_factor",
                  "--nosmooth", "--face_det_batch_size", "--wav2lip_batch_size")
#: Relative to ``wav2lip_dir``: the S3FD face detector upstream otherwise tries to download on every run.
FACE_DETECTOR_WEIGHTS = Path("face_detection/detection/sfd/s3fd.pth")
#: Each frame's mel window looks this far ahead (16 mel steps at 80 per second).
MEL_WINDOW_S = 16 / 80
STDERR_TAIL_CHARS = 4000
STDOUT_TAIL_CHARS = 1000
PREFLIGHT_TIMEOUT_S = 180.0
#: How often the running child is looked at: its tqdm progress, a cancel, the timeout.
CHILD_POLL_S = 0.5
# tqdm's "  40%|####      | 2/5 [00:01<00:02, ...]": upstream's face-detection and lip-sync batch bars.
_TQDM_COUNT = re.compile(rb"(\d+)/(\d+) \[")
# Upstream's output is a few frames; the re-encode is ours and must not hang either.
ENCODE_TIMEOUT_S = 600.0

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class Wav2LipFailedError(BackendError):
    """The Wav2Lip process failed or wrote nothing usable; ``context`` has the stderr tail and the command."""

    code = "wav2lip_failed"


class Wav2LipTimeoutError(BackendError):
    """The Wav2Lip process ran past ``timeout_s``; its whole process group was killed."""

    code = "wav2lip_timeout"
    http_status = 504


class FaceNotDetectedError(InvalidInputError):
    """Upstream's face detector found no face in at least one frame of ``video_uri``.

    Raised to the caller (422) only with ``on_face_not_detected: error``; by
    default the backend falls back to `mux` and records why.
    """

    code = "face_not_detected"


class Wav2LipOptions(BaseModel):
    """``profile.options`` of the `wav2lip` backend. Relative paths are relative to the profile file."""

    model_config = ConfigDict(extra="forbid")

    wav2lip_dir: Path = Field(description="a Wav2Lip checkout (holds inference.py)")
    checkpoint_path: Path = Field(description="wav2lip.pth or wav2lip_gan.pth")
    python: str = Field(default=sys.executable, description="interpreter that can run the checkout")
    timeout_s: float = Field(default=600.0, gt=0, le=24 * 3600)
    device: str = "auto"
    lock_timeout_s: float = Field(default=0.0, ge=0, le=3600)
    face_det_batch_size: int = Field(default=16, ge=1, le=1024)
    wav2lip_batch_size: int = Field(default=128, ge=1, le=4096)
    on_face_not_detected: Literal["mux", "error"] = "mux"
    crf: int = Field(default=18, ge=0, le=51)
    preset: str = "veryfast"
    preflight: bool = Field(default=True, description="run inference.py --help at load() to check the environment")


def parse_options(raw: Mapping[str, Any]) -> Wav2LipOptions:
    """Validate the profile options; every problem is a ConfigError naming ``options.<name>``."""
    try:
        options = Wav2LipOptions.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "options"
        hint = {"wav2lip_dir": " (path to a Wav2Lip checkout)",
                "checkpoint_path": " (path to wav2lip_gan.pth or wav2lip.pth)"}.get(name, "")
        raise ConfigError(f"{first['msg']}{hint}", field=f"options.{name}",
                          context={"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]}
                          ) from None
    if options.preset not in X264_PRESETS:
        raise ConfigError(f"must be one of {', '.join(X264_PRESETS)}",
                          field="options.preset")
    return options


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars * 4))
            return handle.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def child_cuda_visible_devices(device: str, inherited: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for the child so upstream's ``cuda`` is our device (None: leave as is).

    Upstream always uses the first visible GPU when there is one, so ``cpu``
    hides every GPU and ``cuda:N`` exposes only the N-th visible one.
    """
    if device == "cpu":
        return ""
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        visible = [v.strip() for v in inherited.split(",")] if inherited else None
        return visible[index] if visible and index < len(visible) else str(index)
    return None


@dataclass(frozen=True)
class SubprocessResult:
    returncode: int
    seconds: float
    stdout_tail: str
    stderr_tail: str


def tqdm_count(stderr_path: Path) -> tuple[int, int] | None:
    """The last ``done/total`` tqdm wrote to the child's stderr log (None before its first bar)."""
    try:
        with open(stderr_path, "rb") as handle:
            handle.seek(max(0, stderr_path.stat().st_size - 4096))
            found = _TQDM_COUNT.findall(handle.read())
    except OSError:
        return None
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _wait_for_child(proc: subprocess.Popen[bytes], timeout_s: float, stderr_path: Path,
                    ctx: ToolContext | None) -> int:
    """``proc.wait`` in slices: between them its tqdm count goes to ``ctx.progress``, which raises on a cancel."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return proc.wait(timeout=max(0.0, min(CHILD_POLL_S, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        if ctx is not None:
            count = tqdm_count(stderr_path)
            if count is not None:
                ctx.progress(count[0], count[1], "wav2lip batches")
            ctx.check_cancelled()


def run_wav2lip(cmd: list[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float,
                ctx: ToolContext | None = None) -> SubprocessResult:
    """Run upstream in its own process group; on timeout or a cancel of ``ctx``, kill the group (its ffmpeg too).

    Output goes to files, not pipes: upstream's tqdm and ffmpeg can write more
    than a pipe buffer holds, and a full pipe would hang the child.
    """
    stdout_path, stderr_path = cwd / "wav2lip.stdout.log", cwd / "wav2lip.stderr.log"
    started = time.perf_counter()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            returncode = _wait_for_child(proc, timeout_s, stderr_path, ctx)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise Wav2LipTimeoutError(
                f"Wav2Lip did not finish within timeout_s={timeout_s:g} s; its process group was killed",
                context={"timeout_s": timeout_s, "pid": proc.pid, "cmd": cmd,
                         "stderr_tail": _tail(stderr_path, STDERR_TAIL_CHARS),
                         "stdout_tail": _tail(stdout_path, STDOUT_TAIL_CHARS)},
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            # Upstream's own children (its ffmpeg call) must not outlive it either.
            _kill_group(proc, only_leftovers=True)
    return SubprocessResult(returncode, time.perf_counter() - started,
                            _tail(stdout_path, STDOUT_TAIL_CHARS), _tail(stderr_path, STDERR_TAIL_CHARS))


def _kill_group(proc: subprocess.Popen[bytes], *, only_leftovers: bool = False) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    except PermissionError:
        if not only_leftovers:
            proc.kill()
    if not only_leftovers or proc.poll() is None:
        proc.wait()


class _FallbackContext:
    """The request's ToolContext, stamping every output the fallback backend stores.

    Everything else (staging, inputs, the store, the outputs list) is the real
    context's, so the framework's cleanup and provenance rules still hold.
    """

    def __init__(self, ctx: ToolContext, fallback: BackendFallback) -> None:
        self._ctx = ctx
        self._stamp = {"backend": fallback.to_backend, "requested_backend": fallback.from_backend,
                       "fallback": fallback.model_dump(mode="json")}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def put_output(self, request, artifact_type, source, media_type, metadata=None, **kwargs):
        return self._ctx.put_output(request, artifact_type, source, media_type,
                                    {**dict(metadata or {}), **self._stamp}, **kwargs)


class Wav2LipBackend:
    """Lip-sync a clip to its dialogue with a Wav2Lip checkout run as a subprocess."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    # ------------------------------------------------------------------ load

    def load(self) -> None:
        options = parse_options(self.profile.options)
        base = Path(self.settings.profile_path).parent
        self.wav2lip_dir = self._existing(options.wav2lip_dir, base, "wav2lip_dir", "Wav2Lip checkout directory")
        self.inference_py = self.wav2lip_dir / "inference.py"
        if not self.inference_py.is_file():
            raise ConfigError(f"{self.wav2lip_dir} is not a Wav2Lip checkout (no inference.py)",
                              field="options.wav2lip_dir")
        detector = self.wav2lip_dir / FACE_DETECTOR_WEIGHTS
        if not detector.is_file():
            raise ConfigError(
                f"face detector weights missing at {detector}; "
                "download s3fd.pth there as upstream's README says (otherwise upstream tries to download it "
                "on every run)", field="options.wav2lip_dir")
        self.checkpoint_path = self._existing(options.checkpoint_path, base, "checkpoint_path",
                                              "Wav2Lip checkpoint file")
        if self.checkpoint_path.stat().st_size == 0:
            raise ConfigError(f"Wav2Lip checkpoint file is empty: {self.checkpoint_path}",
                              field="options.checkpoint_path")
        self.python = self._interpreter(options.python, base)
        self.options = options
        # This process never touches the GPU itself; "cpu" needs no torch import (hundreds of MB) to resolve.
        requested = options.device.strip().lower()
        self.device = "cpu" if requested == "cpu" else resolve_device(requested)
        self.ffmpeg = checked_ffmpeg()  # the fallback's ffmpeg too
        if options.preflight:
            self._preflight()
        # Provenance: which weights made an output, not just which path they were read from.
        self.checkpoint_sha256 = _sha256(self.checkpoint_path)

    @staticmethod
    def _existing(path: Path, base: Path, name: str, what: str) -> Path:
        resolved = (base / path.expanduser()).resolve()
        if not (resolved.is_dir() if what.endswith("directory") else resolved.is_file()):
            raise ConfigError(f"{what} not found: {resolved}", field=f"options.{name}")
        return resolved

    @staticmethod
    def _interpreter(python: str, base: Path) -> str:
        if os.sep in python:
            candidate = (base / Path(python).expanduser()).absolute()
            found = str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
        else:
            found = shutil.which(python)
        if not found:
            raise ConfigError(f"no executable interpreter {python!r} for the Wav2Lip checkout",
                              field="options.python")
        return found

    def _preflight(self) -> None:
        """``inference.py --help``: imports the checkout's whole stack (torch, cv2, librosa) and lists its flags."""
        cmd = [self.python, str(self.inference_py), "--help"]
        try:
            proc = subprocess.run(cmd, cwd=self.wav2lip_dir, capture_output=True, timeout=PREFLIGHT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"`{' '.join(cmd)}` took over {PREFLIGHT_TIMEOUT_S:.0f} s",
                              field="options.python", context={"cmd": cmd}) from None
        help_text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace")
            # /ready shows only the message, so it carries the last stderr line (usually the ImportError).
            last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "no stderr")
            raise ConfigError(
                f"{self.python} cannot run {self.inference_py} --help (exit {proc.returncode}: {last[:300]}); "
                "install the checkout's requirements into that interpreter",
                field="options.python", context={"cmd": cmd, "stderr_tail": stderr[-STDERR_TAIL_CHARS:]})
        missing = [flag for flag in REQUIRED_FLAGS if flag not in help_text]
        if missing:
            raise ConfigError(f"{self.inference_py} lacks {', '.join(missing)}; update the checkout to "
                              "upstream's current inference.py",
                              field="options.wav2lip_dir", context={"missing_flags": missing})

    # ------------------------------------------------------------------ invoke

    def invoke(self, request: LipsyncRequest, ctx: ToolContext) -> LipsyncResponse:
        started = time.perf_counter()
        video_path, audio_path, video, samples, sample_rate, fit = analyse_lipsync_inputs(request, ctx)
        audio_s = samples.size / sample_rate
        output_s = video.duration_s
        analysed = time.perf_counter()

        work = ctx.staging_path("-wav2lip")
        cmd, env = self._prepare(work, video_path, audio_path, video, output_s, request)
        prepared = time.perf_counter()
        # The child loads the weights onto the GPU, so it runs under the device lock every
        # in-process backend takes (sparkle_motion.gpu_utils.model_context uses the same one).
        with device_lock(self.device, self.options.lock_timeout_s):
            locked = time.perf_counter()
            result = run_wav2lip(cmd, cwd=work, env=env, timeout_s=self.options.timeout_s, ctx=ctx)
        ran = time.perf_counter()
        try:
            self._check(result, cmd, work)
        except FaceNotDetectedError as exc:
            if self.options.on_face_not_detected == "error":
                raise
            return self._fall_back(request, ctx, exc, wav2lip_s=round(ran - locked, 4))
        out_path, produced = self._encode(work, audio_path, video, output_s, request)
        encoded = time.perf_counter()

        source, segments = build_segments(request, samples, sample_rate, audio_s, video, output_s)
        alignment = AlignmentMap(
            source=source, fps=video.fps, frame_count=video.frame_count,
            video_duration_s=round(video.duration_s, 6), audio_duration_s=round(audio_s, 6),
            output_audio_duration_s=round(output_s, 6), fit_applied=fit, segments=segments, lip_motion=True,
        )
        options = request.options
        params = {
            "video_uri": request.video_uri, "audio_uri": request.audio_uri, "fit": options.fit,
            "fit_applied": fit, "audio_bitrate": options.audio_bitrate,
            "word_timings_given": options.word_timings is not None,
            "pads": list(options.pads), "resize_factor": options.resize_factor, "nosmooth": options.nosmooth,
            "face_det_batch_size": self.options.face_det_batch_size,
            "wav2lip_batch_size": self.options.wav2lip_batch_size,
        }
        timings = {"analyse_s": round(analysed - started, 4), "prepare_s": round(prepared - analysed, 4),
                   "lock_wait_s": round(locked - prepared, 4), "wav2lip_s": round(ran - locked, 4),
                   "encode_s": round(encoded - ran, 4)}
        telemetry = {
            "device": self.device, "dtype": "float32",  # upstream runs FloatTensors whatever the device
            # Upstream loads the checkpoint inside each run; its load time is part of inference_s.
            "load_s": None, "inference_s": timings["wav2lip_s"], "lock_wait_s": timings["lock_wait_s"],
            "peak_vram_mb": None,  # the GPU work happens in the child; this process never touches CUDA
            "applied_memory_options": [],
        }
        metadata = {
            "params": params, "lip_motion": True, "audio_codec": "aac", "video_codec": "h264",
            "input_video_codec": video.codec, "audio_duration_s": round(audio_s, 6),
            "video_duration_s": round(video.duration_s, 6), "checkpoint_path": str(self.checkpoint_path),
            "checkpoint_sha256": self.checkpoint_sha256, "wav2lip_dir": str(self.wav2lip_dir),
            "wav2lip_cmd": cmd, "wav2lip_output": produced, "telemetry": telemetry, "timings": timings,
        }
        return store_lipsync_outputs(request, ctx, out_path, metadata, video=video, sample_rate=sample_rate,
                                     alignment=alignment, params=params, source=source, started=started)

    def _prepare(self, work: Path, video_path: Path, audio_path: Path, video: VideoFacts, output_s: float,
                 request: LipsyncRequest) -> tuple[list[str], dict[str, str]]:
        """A private working directory upstream can scribble in, its audio, its command and env."""
        (work / "temp").mkdir(parents=True)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        # Upstream runs `ffmpeg ...` through the shell; ours is imageio-ffmpeg's binary, not on PATH.
        (bin_dir / "ffmpeg").symlink_to(self.ffmpeg)
        # Upstream splits --face on "." and builds a shell command from --audio/--outfile:
        # plain relative names keep both safe whatever the artifact root's path looks like.
        face_name = "face" + (video_path.suffix.lower() if video_path.suffix.lower() in (".mp4", ".mov", ".mkv",
                                                                                         ".avi", ".webm") else ".mp4")
        (work / face_name).symlink_to(video_path)
        heard_s = output_s + MEL_WINDOW_S + 2.0 / video.fps
        run_ffmpeg(["-loglevel", "error", "-i", str(audio_path), "-vn",
                    # fitted dialogue, then silence, so upstream renders every frame of the clip
                    "-af", f"atrim=end={output_s:.6f},apad=whole_dur={heard_s:.6f}",
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", "-f", "wav", str(work / "audio.wav")])
        options = request.options
        cmd = [self.python, str(self.inference_py),
               "--checkpoint_path", str(self.checkpoint_path),
               "--face", face_name, "--audio", "audio.wav", "--outfile", "result.mp4",
               "--fps", f"{video.fps:g}",
               "--pads", *(str(p) for p in options.pads),
               "--resize_factor", str(options.resize_factor),
               "--face_det_batch_size", str(self.options.face_det_batch_size),
               "--wav2lip_batch_size", str(self.options.wav2lip_batch_size)]
        if options.nosmooth:
            cmd.append("--nosmooth")
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        visible = child_cuda_visible_devices(self.device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        return cmd, env

    def _check(self, result: SubprocessResult, cmd: list[str], work: Path) -> None:
        """Turn a failed run into its typed error; a run without a result file is a failure too."""
        context = {"returncode": result.returncode, "cmd": cmd, "stderr_tail": result.stderr_tail,
                   "stdout_tail": result.stdout_tail, "wav2lip_s": round(result.seconds, 4)}
        if result.returncode != 0:
            if FACE_NOT_DETECTED_MARKER in result.stderr_tail:
                line = next((ln.strip() for ln in reversed(result.stderr_tail.splitlines())
                             if FACE_NOT_DETECTED_MARKER in ln), FACE_NOT_DETECTED_MARKER)
                raise FaceNotDetectedError(f"Wav2Lip found no face in at least one frame: {line}",
                                           field="video_uri", context=context)
            if is_oom_error(RuntimeError(result.stderr_tail)):
                raise ModelOOMError(
                    f"Wav2Lip ran out of memory on {self.device}", stage="inference",
                    context={**context, "stage": "inference", "device": self.device,
                             "memory": memory_snapshot(self.device),
                             "hint": "lower options.wav2lip_batch_size / face_det_batch_size in the profile, or "
                                     "raise options.resize_factor in the request"})
            raise Wav2LipFailedError(f"Wav2Lip exited with code {result.returncode}", context=context)
        output = work / "result.mp4"
        if not output.is_file() or output.stat().st_size == 0:
            # Upstream ignores its final ffmpeg call's exit status, so exit 0 proves nothing.
            raise Wav2LipFailedError("Wav2Lip exited 0 but wrote no result.mp4", context=context)

    def _encode(self, work: Path, audio_path: Path, video: VideoFacts, output_s: float,
                request: LipsyncRequest) -> tuple[Path, dict[str, Any]]:
        """Upstream's video at the input's size, rate and frame count, with the fitted dialogue as AAC."""
        produced_path = work / "result.mp4"
        try:
            produced = probe(produced_path, field_name="wav2lip_output").first("video")
        except InvalidInputError as exc:
            raise Wav2LipFailedError(f"Wav2Lip wrote an unreadable result.mp4: {exc.message}") from exc
        if produced is None:
            raise Wav2LipFailedError("Wav2Lip's result.mp4 has no video stream")
        facts = {"width": produced.width, "height": produced.height, "fps": produced.fps, "frames": produced.frames,
                 "codec": produced.codec}
        rate = Fraction(video.fps).limit_denominator(1001)
        # Frames are renumbered at the input's rate (upstream's writer rounds odd rates) and scaled
        # back when --resize_factor shrank them; the surplus from the silent tail is cut.
        filters = [f"setpts=N/({rate.numerator}/{rate.denominator})/TB"]
        if (produced.width, produced.height) != (video.width, video.height):
            filters.append(f"scale={video.width}:{video.height}:flags=bicubic")
        out_path = work / "final.mp4"
        args = ["-loglevel", "error", "-i", str(produced_path), "-i", str(audio_path),
                "-map", "0:v:0", "-map", "1:a:0", "-vf", ",".join(filters), "-r", str(rate),
                "-frames:v", str(video.frame_count),
                "-c:v", "libx264", "-preset", self.options.preset, "-crf", str(self.options.crf),
                "-pix_fmt", "yuv420p",
                "-af", f"apad=whole_dur={output_s:.6f},atrim=end={output_s:.6f}",
                "-c:a", "aac", "-b:a", request.options.audio_bitrate,
                "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out_path)]
        run_ffmpeg(args, timeout=ENCODE_TIMEOUT_S)
        final = probe(out_path, field_name="wav2lip_output").first("video")
        if final is None or final.frames != video.frame_count:
            raise Wav2LipFailedError(
                f"Wav2Lip rendered too few frames: the clip has {video.frame_count}, the result "
                f"{final.frames if final else 0}", context={"wav2lip_output": facts})
        return out_path, facts

    def _fall_back(self, request: LipsyncRequest, ctx: ToolContext, error: FaceNotDetectedError,
                   *, wav2lip_s: float) -> LipsyncResponse:
        fallback = BackendFallback(from_backend="wav2lip", to_backend="mux", reason=error.code,
                                   detail=error.message)
        ctx.log.warning("wav2lip.fallback", to="mux", reason=error.code, detail=error.message,
                        stderr_tail=error.context.get("stderr_tail", "")[-500:])
        response = mux_dialogue(request, _FallbackContext(ctx, fallback), self.ffmpeg)  # type: ignore[arg-type]
        return response.model_copy(update={"fallback": fallback, "lip_motion": False,
                                           "timings": {**response.timings, "wav2lip_s": wav2lip_s}})

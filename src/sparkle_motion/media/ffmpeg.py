"""ffmpeg (the binary shipped by imageio-ffmpeg) and PyAV, behind typed errors.

No system ffmpeg/ffprobe is assumed: imageio-ffmpeg ships a static ffmpeg in its
wheel, and PyAV bundles libav* for probing and decoding.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from sparkle_motion.diskspace import disk_full_error, mentions_disk_full
from sparkle_motion.errors import BackendError, Cancelled, InvalidInputError, SparkleError
from sparkle_motion.logs import get_logger

STDERR_TAIL_CHARS = 4000
#: How many times an ffmpeg run killed by a signal is started again.
KILLED_RUNS_RETRIED = 1

log = get_logger("sparkle_motion.media.ffmpeg")


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class CancelSignal(Protocol):
    """Anything with ``is_set()``: a ``threading.Event`` or a ToolContext's cancel token."""

    def is_set(self) -> bool: ...


CANCEL_POLL_S = 0.1


def run_ffmpeg(args: Sequence[str], *, timeout: float = 600.0, input_bytes: bytes | None = None,
               cancel: CancelSignal | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with ``args`` (without the binary); raise BackendError with the stderr tail on failure.

    The last argument is the output, as ffmpeg takes it: a full disk there is a
    DiskFullError naming it.  When ``cancel`` is set, ffmpeg is killed within
    ``CANCEL_POLL_S`` and :class:`Cancelled` is raised.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *map(str, args)]
    if input_bytes is not None:
        cmd.remove("-nostdin")
    for attempt in range(1, KILLED_RUNS_RETRIED + 2):
        returncode, stdout, stderr = _run_once(cmd, args, timeout=timeout, input_bytes=input_bytes, cancel=cancel)
        # Killed by a signal from outside (OOM killer, kill -9): the same command is run again,
        # once; its output file is rewritten from scratch (-y). A failure of its own is not retried.
        if returncode >= 0 or attempt > KILLED_RUNS_RETRIED:
            break
        log.warning("ffmpeg_killed", signal=-returncode, attempt=attempt)
    if returncode != 0:
        tail = stderr.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
        if mentions_disk_full(tail):
            raise disk_full_error(str(args[-1]) if args else None, cause=tail)
        raise BackendError(f"ffmpeg exited with {returncode}", context={"cmd": cmd, "stderr": tail})
    return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)


def _run_once(cmd: list[str], args: Sequence[str], *, timeout: float, input_bytes: bytes | None,
              cancel: CancelSignal | None) -> tuple[int, bytes, bytes]:
    """One ffmpeg process, polled so that ``cancel`` kills it within ``CANCEL_POLL_S``."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    pending_input = input_bytes
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(pending_input, timeout=CANCEL_POLL_S)
                return proc.returncode, stdout, stderr
            except subprocess.TimeoutExpired:
                pending_input = None  # communicate() keeps feeding what it was first given
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled: ffmpeg was stopped", context={"output": Path(str(args[-1])).name})
                if time.monotonic() > deadline:
                    raise BackendError(f"ffmpeg timed out after {timeout:.0f} s", context={"cmd": cmd}) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


class VideoWriter:
    """Pipe raw RGB frames into ffmpeg's stdin and encode H.264 (yuv420p).

    Frames never touch the disk as images; ffmpeg reads them as rawvideo.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, *, crf: int = 18,
                 preset: str = "veryfast", extra_args: Sequence[str] = ()) -> None:
        if width % 2 or height % 2:
            raise InvalidInputError(f"H.264 yuv420p needs even dimensions, got {width}x{height}", field="width")
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames_written = 0
        rate = str(Fraction(fps).limit_denominator(1001))
        self.cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", rate, "-i", "pipe:0",
            "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", *extra_args, str(self.path),
        ]
        self._proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._started = time.perf_counter()

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise BackendError(f"frame must be uint8 {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as exc:
            raise self._failure("ffmpeg closed its input early") from exc
        self.frames_written += 1

    def close(self) -> float:
        """Finish encoding; returns the encode wall time in seconds."""
        assert self._proc.stdin is not None
        if not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait(timeout=600)
        if self._proc.returncode != 0:
            raise self._failure(f"ffmpeg exited with {self._proc.returncode}")
        return time.perf_counter() - self._started

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.path.unlink(missing_ok=True)

    def _failure(self, message: str) -> SparkleError:
        stderr = self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
        tail = stderr[-STDERR_TAIL_CHARS:]
        if mentions_disk_full(tail):
            return disk_full_error(self.path, cause=tail)
        return BackendError(message, context={"cmd": self.cmd, "stderr": tail})

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class StreamInfo:
    kind: str  # "video" | "audio" | "subtitle" | "data"
    codec: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float | None
    streams: list[StreamInfo] = field(default_factory=list)

    def first(self, kind: str) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == kind), None)


def probe(path: Path, *, field_name: str = "uri") -> MediaInfo:
    """Describe a media file with PyAV; a file that cannot be parsed is InvalidInputError(field_name)."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = []
            for s in container.streams:
                duration = float(s.duration * s.time_base) if s.duration is not None and s.time_base else None
                if s.type == "video":
                    rate = s.average_rate or s.guessed_rate
                    streams.append(StreamInfo("video", s.codec_context.name, s.codec_context.width,
                                              s.codec_context.height, float(rate) if rate else None,
                                              s.frames or None, s.codec_context.pix_fmt, duration_s=duration))
                elif s.type == "audio":
                    streams.append(StreamInfo("audio", s.codec_context.name, sample_rate=s.codec_context.sample_rate,
                                              channels=s.codec_context.channels, frames=s.frames or None,
                                              duration_s=duration))
                else:
                    codec = s.codec_context.name if s.codec_context else "unknown"
                    streams.append(StreamInfo(s.type, codec, duration_s=duration))
            duration = container.duration / 1_000_000 if container.duration else None
            return MediaInfo(container.format.name, duration, streams)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InvalidInputError(f"not a readable media file: {exc}", field=field_name) from exc


def decode_video_frames(path: Path, *, max_frames: int | None = None, field_name: str = "uri") -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) of the first video stream."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidInputError("media has no video stream", field=field_name)
            for i, frame in enumerate(container.decode(video=0)):
                if max_frames is not None and i >= max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise InvalidInputError(f"video could not be decoded: {exc}", field=field_name) from exc

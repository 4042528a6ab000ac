"""The `ffmpeg` backend: clips → one H.264/AAC MP4 with subtitles.

Steps, each an ffmpeg run whose command line goes into the output metadata:

1. picture — concat demuxer with ``-c copy`` when every clip shares its codec
   parameters and nothing is trimmed (no quality loss, fast); otherwise one
   concat filter graph that trims, scales/pads to the first clip's size, fixes
   the frame rate and re-encodes with libx264 (and burns subtitles if asked);
2. sound — the request's audio track, or the clips' own audio in clip order,
   or silence; resampled to 48 kHz stereo and padded/trimmed to the picture;
   with a music bed, the bed is mixed in under it, ducked by the dialogue (``music.py``);
3. loudness — measured with the ebur128 scanner (integrated, true peak); when the
   linear gain would push peaks past the true-peak ceiling, peaks are limited first
   (make_headroom); then that linear gain (loudnorm's linear mode, as a ``volume``)
   while muxing: picture copied, AAC audio, mov_text subtitles tagged ``eng``,
   ``+faststart``; the output is measured again with the ebur128 scanner.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import BackendError, InvalidInputError
from sparkle_motion.media import VideoWriter, decode_video_frames, ffmpeg_exe, probe, run_ffmpeg
from sparkle_motion.media.loudness import gain_filter, integrated_loudness, make_headroom, measure_ebur128
from sparkle_motion.services import ToolContext

from function_tools.assemble_ffmpeg.models import AssembleRequest, AssembleResponse, ClipRef, Subtitle
from function_tools.assemble_ffmpeg.music import mix_music_bed

MAX_FILM_DURATION_S = 3600.0
AUDIO_RATE = 48000
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts")


@dataclass(frozen=True)
class ClipFacts:
    index: int
    path: Path
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    rate: Fraction
    frames: int
    has_audio: bool
    signature: tuple
    in_s: float
    out_s: float

    @property
    def field(self) -> str:
        return f"clips[{self.index}]"

    @property
    def used_s(self) -> float:
        return self.out_s - self.in_s


def _stream_signature(path: Path, field: str) -> tuple[Fraction, Fraction, tuple]:
    """(frame rate, time base, everything that must match for concat by stream copy)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            extradata = hashlib.sha256(bytes(ctx.extradata or b"")).hexdigest()
            signature = (ctx.name, ctx.profile, ctx.width, ctx.height, ctx.pix_fmt,
                         Fraction(rate) if rate else None, Fraction(stream.time_base), extradata)
            return Fraction(rate) if rate else Fraction(0), Fraction(stream.time_base), signature
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise InvalidInputError(f"video stream unreadable: {exc}", field=field) from exc


def inspect_clip(index: int, clip: ClipRef, path: Path) -> ClipFacts:
    """Probe one clip and validate its trims; every failure names ``clips[i].*``."""
    field = f"clips[{index}].uri"
    info = probe(path, field_name=field)
    video = info.first("video")
    if video is None:
        raise InvalidInputError("clip has no video stream", field=field)
    rate, _, signature = _stream_signature(path, field)
    if rate <= 0 or not video.width or not video.height:
        raise InvalidInputError("video stream has no usable frame rate or size", field=field)
    if video.frames:
        frames = int(video.frames)
    else:
        duration = video.duration_s or info.duration_s
        if not duration:
            raise InvalidInputError("video stream has no duration", field=field)
        frames = int(round(duration * rate))
    if frames < 1:
        raise InvalidInputError("video stream has no frames", field=field)
    duration_s = float(frames / rate)
    half_frame = 0.5 / float(rate)
    in_s = clip.in_s or 0.0
    out_s = duration_s if clip.out_s is None else clip.out_s
    if in_s >= duration_s - half_frame:
        raise InvalidInputError(f"in_s {in_s:.3f} s is at or after the clip's end ({duration_s:.3f} s)",
                                field=f"clips[{index}].in_s")
    if out_s > duration_s + half_frame:
        raise InvalidInputError(f"out_s {out_s:.3f} s is after the clip's end ({duration_s:.3f} s)",
                                field=f"clips[{index}].out_s")
    if out_s - in_s < 1.0 / float(rate) - 1e-9:
        raise InvalidInputError("the trimmed clip is shorter than one frame", field=f"clips[{index}].out_s")
    return ClipFacts(index, path, video.codec, int(video.width), int(video.height), video.pix_fmt, rate, frames,
                     info.first("audio") is not None, signature, in_s, min(out_s, duration_s))


def can_stream_copy(clips: list[ClipFacts], request: AssembleRequest) -> tuple[bool, str]:
    """Stream copy needs identical H.264 yuv420p parameters, no trims and no pixel edits."""
    if request.options.force_reencode:
        return False, "force_reencode requested"
    if request.options.burn_subtitles:
        return False, "burn_subtitles needs the pixels"
    if any(c.trimmed for c in request.clips):
        return False, "trimmed clips"
    first = clips[0]
    if first.codec != "h264" or first.pix_fmt != "yuv420p":
        return False, f"clips are {first.codec}/{first.pix_fmt}, the film is h264/yuv420p"
    for clip in clips[1:]:
        if clip.signature != first.signature:
            return False, f"clips[{clip.index}] codec parameters differ from clips[0]"
    return True, "all clips share codec parameters"


def srt_timestamp(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def render_srt(subtitles: list[Subtitle]) -> str:
    """SubRip text, cues in start order; blank lines inside a cue would end it, so they are dropped."""
    blocks = []
    for number, cue in enumerate(sorted(subtitles, key=lambda c: (c.start_s, c.end_s)), start=1):
        lines = [line.strip() for line in cue.text.replace("\r", "").split("\n") if line.strip()]
        blocks.append(f"{number}\n{srt_timestamp(cue.start_s)} --> {srt_timestamp(cue.end_s)}\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def find_font() -> Path | None:
    """A TrueType/OpenType font on this machine for libass (DejaVu Sans preferred)."""
    candidates: list[Path] = []
    for directory in FONT_DIRS:
        root = Path(directory).expanduser()
        if root.is_dir():
            candidates.extend(sorted(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf")))
    for path in candidates:
        if path.name == "DejaVuSans.ttf":
            return path
    return candidates[0] if candidates else None


def _filter_quote(value: str) -> str:
    """Quote a filter option value; quoting protects ':' ',' and spaces at both filtergraph levels.

    Values come from our own staging paths, font paths and style strings; a
    quote or backslash would need a second escaping level, so it is refused.
    """
    if "'" in value or "\\" in value:
        raise BackendError(f"cannot pass {value!r:.200} to an ffmpeg filter option")
    return f"'{value}'"


def burn_subtitles_pillow(source: Path, target: Path, subtitles: list[Subtitle], fps: float, *, crf: int,
                          preset: str) -> None:
    """Burn subtitles with Pillow over decoded frames (used when no font file exists for libass)."""
    from PIL import Image, ImageDraw, ImageFont

    info = probe(source, field_name="clips")
    video = info.first("video")
    assert video is not None and video.width and video.height
    width, height = int(video.width), int(video.height)
    font = ImageFont.load_default(size=max(10, height // 16))
    with VideoWriter(target, width, height, fps, crf=crf, preset=preset) as writer:
        for index, frame in enumerate(decode_video_frames(source, field_name="clips")):
            t = index / fps
            active = [c.text for c in subtitles if c.start_s <= t < c.end_s]
            if active:
                image = Image.fromarray(frame)
                draw = ImageDraw.Draw(image)
                text = "\n".join(active)
                box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
                x = (width - (box[2] - box[0])) // 2
                y = height - (box[3] - box[1]) - max(4, height // 20)
                draw.multiline_text((x, y), text, font=font, fill=(255, 255, 255), align="center",
                                    stroke_width=2, stroke_fill=(0, 0, 0))
                frame = np.asarray(image)
            writer.write(frame)


class FfmpegAssembleBackend:
    """Assemble a film with the ffmpeg binary shipped by imageio-ffmpeg."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.font: Path | None = None

    def load(self) -> None:
        run_ffmpeg(["-version"], timeout=30)
        self.ffmpeg = ffmpeg_exe()
        self.font = find_font()

    # ------------------------------------------------------------------ steps
    def _picture(self, clips: list[ClipFacts], request: AssembleRequest, ctx: ToolContext, copy: bool,
                 srt_path: Path | None, commands: list[list[str]]) -> tuple[Path, str]:
        """Build the video-only MP4; returns (path, how subtitles were burnt or "")."""
        video_path = ctx.staging_path(".video.mp4")
        options = request.options
        if copy:
            listing = ctx.staging_path(".ffconcat")
            lines = ["ffconcat version 1.0"]
            for clip in clips:
                lines.append("file '" + str(clip.path).replace("'", "'\\''") + "'")
            listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
            args = ["-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-map", "0:v:0", "-c:v", "copy", "-an", "-map_metadata", "-1", str(video_path)]
            run_ffmpeg(args, cancel=ctx.cancel_token)
            commands.append([self.ffmpeg, *args])
            return video_path, ""
        first = clips[0]
        width, height, rate = first.width, first.height, first.rate
        inputs: list[str] = []
        graph: list[str] = []
        for clip in clips:
            inputs += ["-i", str(clip.path)]
            graph.append(
                f"[{clip.index}:v:0]trim=start={clip.in_s:.6f}:end={clip.out_s:.6f},setpts=PTS-STARTPTS,"
                f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={rate},format=yuv420p[v{clip.index}]")
        graph.append("".join(f"[v{c.index}]" for c in clips) + f"concat=n={len(clips)}:v=1:a=0[vcat]")
        burnt = ""
        out_label = "vcat"
        if options.burn_subtitles and srt_path is not None and self.font is not None:
            style = "FontName=DejaVu Sans,Outline=1" if self.font.name.startswith("DejaVu") else "Outline=1"
            graph.append(f"[vcat]subtitles=filename={_filter_quote(str(srt_path))}"
                         f":fontsdir={_filter_quote(str(self.font.parent))}"
                         f":force_style={_filter_quote(style)}[vsub]")
            out_label, burnt = "vsub", "libass"
        args = ["-loglevel", "error", *inputs, "-filter_complex", ";".join(graph), "-map", f"[{out_label}]",
                "-an", "-c:v", "libx264", "-preset", options.preset, "-crf", str(options.crf),
                "-pix_fmt", "yuv420p", "-r", str(rate), "-map_metadata", "-1", str(video_path)]
        run_ffmpeg(args, cancel=ctx.cancel_token)
        commands.append([self.ffmpeg, *args])
        if options.burn_subtitles and srt_path is not None and not burnt:
            burnt_path = ctx.staging_path(".burnt.mp4")
            burn_subtitles_pillow(video_path, burnt_path, request.subtitles, float(rate), crf=options.crf,
                                  preset=options.preset)
            video_path, burnt = burnt_path, "pillow"
        return video_path, burnt

    def _sound(self, clips: list[ClipFacts], request: AssembleRequest, ctx: ToolContext, audio_path: Path | None,
               film_s: float, commands: list[list[str]]) -> tuple[Path, str]:
        """48 kHz stereo float WAV exactly ``film_s`` long; returns (path, source)."""
        wav_path = ctx.staging_path(".audio.wav")
        fit = f"apad=whole_dur={film_s:.6f},atrim=end={film_s:.6f}"
        layout = f"aresample={AUDIO_RATE},aformat=sample_fmts=flt:channel_layouts=stereo"
        if audio_path is not None:
            args = ["-loglevel", "error", "-i", str(audio_path), "-map", "0:a:0",
                    "-af", f"asetpts=PTS-STARTPTS,{layout},{fit}"]
            source = "audio_uri"
        elif any(c.has_audio for c in clips):
            inputs: list[str] = []
            graph: list[str] = []
            next_input = 0
            for clip in clips:
                # Each clip contributes exactly its picture's length, so sound stays in sync at every cut.
                span = f"apad=whole_dur={clip.used_s:.6f},atrim=end={clip.used_s:.6f}"
                if clip.has_audio:
                    inputs += ["-i", str(clip.path)]
                    graph.append(f"[{next_input}:a:0]atrim=start={clip.in_s:.6f}:end={clip.out_s:.6f},"
                                 f"asetpts=PTS-STARTPTS,{layout},{span}[a{clip.index}]")
                    next_input += 1
                else:
                    graph.append(f"anullsrc=r={AUDIO_RATE}:cl=stereo,{layout},atrim=end={clip.used_s:.6f}"
                                 f"[a{clip.index}]")
            graph.append("".join(f"[a{c.index}]" for c in clips) + f"concat=n={len(clips)}:v=0:a=1,{fit}[aout]")
            args = ["-loglevel", "error", *inputs, "-filter_complex", ";".join(graph), "-map", "[aout]"]
            source = "clips"
        else:
            args = ["-loglevel", "error", "-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo",
                    "-af", f"{layout},atrim=end={film_s:.6f}"]
            source = "silence"
        args += ["-ar", str(AUDIO_RATE), "-ac", "2", "-c:a", "pcm_f32le", "-f", "wav", str(wav_path)]
        run_ffmpeg(args, cancel=ctx.cancel_token)
        commands.append([self.ffmpeg, *args])
        return wav_path, source

    # ----------------------------------------------------------------- invoke
    def invoke(self, request: AssembleRequest, ctx: ToolContext) -> AssembleResponse:
        started = time.perf_counter()
        options = request.options
        clips = []
        for index, clip in enumerate(request.clips):
            _, path = ctx.resolve_input(clip.uri, f"clips[{index}].uri")
            clips.append(inspect_clip(index, clip, path))
        audio_path = None
        if request.audio_uri is not None:
            _, audio_path = ctx.resolve_input(request.audio_uri, "audio_uri")
            if probe(audio_path, field_name="audio_uri").first("audio") is None:
                raise InvalidInputError("media has no audio stream", field="audio_uri")
        music_path, music_s = None, None
        if request.music is not None:
            _, music_path = ctx.resolve_input(request.music.uri, "music.uri")
            music_info = probe(music_path, field_name="music.uri")
            if music_info.first("audio") is None:
                raise InvalidInputError("media has no audio stream", field="music.uri")
            music_s = music_info.first("audio").duration_s or music_info.duration_s
        copy, copy_reason = can_stream_copy(clips, request)
        rate = clips[0].rate
        frame_s = 1.0 / float(rate)
        expected_s = sum(c.used_s for c in clips)
        if expected_s > MAX_FILM_DURATION_S:
            raise InvalidInputError(f"the clips add up to {expected_s:.1f} s; at most {MAX_FILM_DURATION_S:.0f} s",
                                    field="clips")
        for i, cue in enumerate(request.subtitles):
            if cue.start_s >= expected_s:
                raise InvalidInputError(f"starts at {cue.start_s:.3f} s, after the film ends ({expected_s:.3f} s)",
                                        field=f"subtitles[{i}].start_s")
            if cue.end_s > expected_s + frame_s:
                raise InvalidInputError(f"ends at {cue.end_s:.3f} s, after the film ends ({expected_s:.3f} s)",
                                        field=f"subtitles[{i}].end_s")
        inspected = time.perf_counter()

        commands: list[list[str]] = []
        srt_path = None
        if request.subtitles:
            srt_path = ctx.staging_path(".srt")
            srt_path.write_text(render_srt(request.subtitles), encoding="utf-8")
        video_path, burnt = self._picture(clips, request, ctx, copy, srt_path, commands)
        picture_info = probe(video_path, field_name="clips")
        picture = picture_info.first("video")
        if picture is None or not picture.frames or not picture.fps:
            raise BackendError("assembled picture has no frames", context={"commands": commands})
        film_s = picture.frames / picture.fps
        if abs(film_s - expected_s) > frame_s + 1e-6:
            raise BackendError(f"assembled picture is {film_s:.3f} s, expected {expected_s:.3f} s",
                               context={"commands": commands})
        pictured = time.perf_counter()

        wav_path, audio_source = self._sound(clips, request, ctx, audio_path, film_s, commands)
        music_mix = None
        if request.music is not None:
            mixed_path = ctx.staging_path(".mix.wav")
            music_mix = mix_music_bed(wav_path, music_path, mixed_path, ctx.staging_path(".bed.wav"), film_s=film_s,
                                      music_s=music_s, level_lufs=request.music.level_lufs,
                                      duck_db=request.music.duck_db, fade_s=request.music.fade_s, commands=commands)
            wav_path = mixed_path
        source_loudness = measure_ebur128(wav_path)
        wav_path, measured, limiter_ceiling_db = make_headroom(
            wav_path, source_loudness, ctx.staging_path(".wav"), target_lufs=options.loudness_lufs,
            measure=measure_ebur128)
        if measured.is_silent:
            audio_filter = "anull"  # nothing to normalise; a gain on silence would only lift noise
        else:
            audio_filter = f"{gain_filter(measured, target_lufs=options.loudness_lufs)},aresample={AUDIO_RATE}"
        sounded = time.perf_counter()

        out_path = ctx.staging_path(".mp4")
        args = ["-loglevel", "error", "-i", str(video_path), "-i", str(wav_path)]
        maps = ["-map", "0:v:0", "-map", "1:a:0"]
        subtitle_args: list[str] = []
        if srt_path is not None:
            args += ["-i", str(srt_path)]
            maps += ["-map", "2:s:0"]
            subtitle_args = ["-c:s", "mov_text", "-metadata:s:s:0", "language=eng"]
        args += [*maps, "-c:v", "copy", "-af", audio_filter, "-c:a", "aac", "-b:a", options.audio_bitrate,
                 "-ar", str(AUDIO_RATE), "-ac", "2", *subtitle_args, "-t", f"{film_s:.6f}",
                 "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out_path)]
        run_ffmpeg(args, cancel=ctx.cancel_token)
        commands.append([self.ffmpeg, *args])
        output_lufs = integrated_loudness(out_path)
        muxed = time.perf_counter()

        timings = {"inspect_s": round(inspected - started, 4), "picture_s": round(pictured - inspected, 4),
                   "sound_s": round(sounded - pictured, 4), "mux_s": round(muxed - sounded, 4)}
        clip_meta = [{"uri": request.clips[c.index].uri, "in_s": round(c.in_s, 6), "out_s": round(c.out_s, 6),
                      "used_s": round(c.used_s, 6), "codec": c.codec, "width": c.width, "height": c.height,
                      "fps": float(c.rate), "has_audio": c.has_audio} for c in clips]
        metadata = {
            "params": {"clips": len(clips), "audio_uri": request.audio_uri, "subtitles": len(request.subtitles),
                       **options.model_dump(mode="json")},
            "concat_mode": "stream_copy" if copy else "reencode",
            "concat_reason": copy_reason,
            "audio_source": audio_source,
            "music": {"uri": request.music.uri, **music_mix.as_dict()} if music_mix else None,
            "clip_audio_ignored": audio_source == "audio_uri" and any(c.has_audio for c in clips),
            "clips": clip_meta,
            "duration_s": round(film_s, 6),
            "expected_duration_s": round(expected_s, 6),
            "codecs": {"video": "h264", "audio": "aac", "subtitles": "mov_text" if srt_path else None},
            "subtitles_burnt": burnt or None,
            "loudness": {"target_lufs": options.loudness_lufs, "input_lufs": source_loudness.integrated_lufs,
                         "input_true_peak_dbtp": source_loudness.true_peak_dbtp, "output_lufs": output_lufs,
                         "peak_limiter_ceiling_dbfs": limiter_ceiling_db},
            "ffmpeg_commands": commands,
            "timings": timings,
        }
        media = {"duration_s": film_s, "fps": float(picture.fps), "width": picture.width,
                 "height": picture.height, "sample_rate": AUDIO_RATE}
        video_manifest = ctx.put_output(request, "video", out_path, "video/mp4", metadata, media=media,
                                        ext=".mp4", move=True)
        artifacts = [video_manifest]
        subtitles_uri = None
        if srt_path is not None:
            srt_manifest = ctx.put_output(request, "subtitles", srt_path, "application/x-subrip",
                                          {"video_uri": video_manifest.uri, "cues": len(request.subtitles),
                                           "language": "eng"}, ext=".srt", move=True)
            artifacts.append(srt_manifest)
            subtitles_uri = srt_manifest.uri
        timings["total_s"] = round(time.perf_counter() - started, 4)
        return AssembleResponse(
            artifacts=artifacts, timings=timings, video_uri=video_manifest.uri, subtitles_uri=subtitles_uri,
            concat_mode="stream_copy" if copy else "reencode", duration_s=round(film_s, 6),
            audio_source=audio_source, input_loudness_lufs=source_loudness.integrated_lufs,
            output_loudness_lufs=output_lufs, music=music_mix.as_dict() if music_mix else None,
        )

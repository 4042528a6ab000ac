"""Lip motion for storyboard clips: the speaker's mouth opens on the words and closes in the silences.

Why this exists: on the CPU tier the pictures are storyboard drawings, which no
neural lipsync model reads as a face.  But the drawings are ours: the storyboard
records each face's mouth box in its keyframe's layout, and ``keyframe_motion``
follows those boxes through the camera move and the figures' motion and records
them per frame in the clip's metadata (``mouths``: name → one box or null per
frame).  With the TTS word timings this module decides, per frame, how open the
speaker's mouth is and redraws that box: a closed mouth is left exactly as drawn,
an open one is painted over it.  It only reads the metadata; it imports neither
``videos_wan`` nor ``images_sdxl``.

The openness of a word: a short attack and release (so a mouth is shut between
words separated by a pause) times a per-syllable wave (a vowel group of the
word is one opening), sampled at each frame's midpoint.  The first and last
frames are never redrawn: they are the shot's keyframes, which the film's cuts
must show exactly.  Everything is a pure function of the request and the clip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sparkle_motion.media import VideoWriter, decode_video_frames
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.inputs import VideoFacts
from function_tools.lipsync_wav2lip.models import LipsyncRequest, WordTiming

ATTACK_S = 0.04            # a mouth opens this fast at a word's start ...
RELEASE_S = 0.06           # ... and closes this fast at its end
SYLLABLE_FLOOR = 0.55      # openness between two syllables of one word, as a share of the peak
CLOSED_BELOW = 0.12        # less open than this: the drawn (closed) mouth is kept as it is
MAX_FACES = 16
INSIDE = (60, 20, 24)      # the open mouth's inside, as the storyboard draws it
# What keyframe_motion records as its encoder settings; anything else is not ours and not replayed.
_X264_ZONES = re.compile(r"^zones=[0-9]+,[0-9]+,q=[0-9]{1,2}(?:/[0-9]+,[0-9]+,q=[0-9]{1,2})*$")
_PRESETS = {"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"}
_VOWELS = re.compile(r"[aeiouyàâäéèêëïîôöùûüáíóú]+", re.I)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Encoder:
    """The clip's own encoder settings, so the redrawn shot still concatenates by stream copy."""

    crf: int = 18
    preset: str = "veryfast"
    x264_params: str | None = None

    def args(self) -> tuple[str, ...]:
        return ("-x264-params", self.x264_params) if self.x264_params else ()


@dataclass
class MouthPlan:
    """Per frame of the clip: whose mouth opens, where, and how far (frames not listed stay as they are)."""

    encoder: Encoder
    frames: dict[int, tuple[str, Box, float]] = field(default_factory=dict)

    def track(self) -> list[dict[str, Any]]:
        return [{"frame": i, "speaker": name, "box": list(box), "openness": round(value, 3)}
                for i, (name, box, value) in sorted(self.frames.items())]


def syllables(word: str) -> int:
    return max(1, len(_VOWELS.findall(word)))


def word_openness(word: WordTiming, t: float) -> float:
    """How open the mouth is ``t`` seconds into the audio while ``word`` is said (0 outside it)."""
    if t < word.start_s or t >= word.end_s:
        return 0.0
    ramp = min(1.0, (t - word.start_s) / ATTACK_S, (word.end_s - t) / RELEASE_S)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    phase = (t - word.start_s) / (word.end_s - word.start_s) * syllables(word.word)
    wave = SYLLABLE_FLOOR + (1.0 - SYLLABLE_FLOOR) * math.sin(math.pi * (phase % 1.0))
    return ramp * wave


def _encoder(metadata: dict[str, Any]) -> Encoder:
    raw = metadata.get("encoder")
    if not isinstance(raw, dict):
        return Encoder()
    crf, preset, params = raw.get("crf"), raw.get("preset"), raw.get("x264_params")
    return Encoder(crf if isinstance(crf, int) and 0 <= crf <= 51 else 18,
                   preset if preset in _PRESETS else "veryfast",
                   params if isinstance(params, str) and _X264_ZONES.match(params) else None)


def _faces(metadata: dict[str, Any], video: VideoFacts) -> dict[str, list[Box | None]]:
    """The clip's recorded mouth track, name → box per frame; boxes outside the frame are dropped."""
    raw = metadata.get("mouths")
    if not isinstance(raw, dict):
        return {}
    faces: dict[str, list[Box | None]] = {}
    for name, boxes in list(raw.items())[:MAX_FACES]:
        if not isinstance(name, str) or not isinstance(boxes, list) or len(boxes) != video.frame_count:
            continue
        track: list[Box | None] = []
        for box in boxes:
            ok = (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)
                  and 0 <= box[0] < box[2] <= video.width and 0 <= box[1] < box[3] <= video.height)
            track.append(tuple(box) if ok else None)  # type: ignore[arg-type]
        faces[name] = track
    return faces


def plan_mouth_motion(request: LipsyncRequest, clip_metadata: dict[str, Any], video: VideoFacts,
                      output_s: float) -> tuple[MouthPlan | None, str]:
    """What to redraw, or None and why nothing is (then the clip's video is copied as it is)."""
    words = request.options.word_timings
    if not words:
        return None, "no word timings in the request"
    faces = _faces(clip_metadata, video)
    if not faces:
        return None, "the clip records no mouths (not a storyboard clip with a face in view)"
    by_key = {name.casefold(): name for name in faces}
    plan = MouthPlan(_encoder(clip_metadata))
    unplaced: set[str] = set()
    for word in words:
        if word.start_s >= output_s:
            continue
        named = by_key.get(word.speaker.casefold()) if word.speaker is not None else None
        if word.speaker is not None and named is None:
            unplaced.add(word.speaker)
            continue
        first = max(1, math.floor(word.start_s * video.fps))
        last = min(video.frame_count - 2, math.ceil(word.end_s * video.fps))
        for index in range(first, last + 1):
            value = word_openness(word, (index + 0.5) / video.fps)
            in_view = [name for name, track in faces.items() if track[index] is not None]
            # No speaker named: the face, if the frame shows exactly one.
            name = named if named is not None else (in_view[0] if len(in_view) == 1 else None)
            if name is None and len(in_view) > 1:
                unplaced.add("(no speaker given, several faces)")
            if name is None or faces[name][index] is None or value < CLOSED_BELOW:
                continue
            if index not in plan.frames or plan.frames[index][2] < value:
                plan.frames[index] = (name, faces[name][index], value)  # type: ignore[assignment]
    if not plan.frames:
        why = f"no face in the clip for speaker(s) {sorted(unplaced)}" if unplaced else "no word opens a mouth"
        return None, why
    return plan, (f"no face for speaker(s) {sorted(unplaced)}" if unplaced else "")


def _skin_and_lips(frame: np.ndarray, box: Box) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The face colour around the mouth (bands above and below it) and the drawn lips' colour inside it."""
    x0, y0, x1, y1 = box
    band = max(1, (y1 - y0) // 2)
    around = np.concatenate([frame[max(0, y0 - 1 - band):max(0, y0 - 1), x0:x1].reshape(-1, 3),
                             frame[y1 + 1:y1 + 1 + band, x0:x1].reshape(-1, 3)])
    inside = frame[y0:y1, x0:x1].reshape(-1, 3).astype(np.int32)
    skin = np.median(around if around.size else inside, axis=0)
    distance = np.abs(inside - skin).sum(axis=1)
    lips = np.median(inside[distance >= distance.max() * 0.5], axis=0) if distance.max() >= 30 else skin * 0.6
    return tuple(int(v) for v in skin), tuple(int(v) for v in lips)


def draw_open_mouth(frame: np.ndarray, box: Box, openness: float) -> np.ndarray:
    """``frame`` with the mouth in ``box`` painted open: an ellipse whose height follows ``openness`` (0..1).

    The same shapes as the storyboard's mouth (a dark inside, a lip-coloured rim),
    drawn over the closed one after covering it with the surrounding skin.
    """
    x0, y0, x1, y1 = box
    skin, lips = _skin_and_lips(frame, box)
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle((x0 - 1, y0 - 1, x1, y1), fill=skin)
    cy = (y0 + y1 - 1) / 2
    half = max(1.0, (y1 - y0 - 1) / 2 * min(1.0, openness))
    draw.ellipse((x0 + 1, cy - half, x1 - 2, cy + half), fill=INSIDE, outline=lips, width=max(1, (y1 - y0) // 4))
    return np.asarray(image)


def redraw_mouths(video_path: Path, plan: MouthPlan, video: VideoFacts, out_path: Path,
                  ctx: ToolContext) -> int:
    """Decode the clip, open the planned mouths, encode it with the clip's settings; returns frames written."""
    writer = VideoWriter(out_path, video.width, video.height, video.fps, crf=plan.encoder.crf,
                         preset=plan.encoder.preset, extra_args=plan.encoder.args())
    try:
        frames: Iterator[np.ndarray] = decode_video_frames(video_path, field_name="video_uri")
        for index, frame in enumerate(frames):
            ctx.check_cancelled()
            planned = plan.frames.get(index)
            writer.write(draw_open_mouth(frame, planned[1], planned[2]) if planned else frame)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.frames_written

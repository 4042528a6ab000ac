"""Where each shot sits in the film, and which spoken words fall in it.

Pure functions over a plan and the dialogue timeline's word timings, shared by
the production run (lipsync gets each talking shot's words) and the tests that
check them over many generated plans.
"""

from __future__ import annotations

from typing import Any

from sparkle_motion.plan import MoviePlan

__all__ = ["frame_counts", "shot_bounds", "words_by_shot"]


def frame_counts(plan: MoviePlan, fps: float) -> list[int]:
    """Frames per shot. Cumulative rounding: the film has exactly round(runtime * fps) frames and
    every cut lands on the frame nearest its planned time."""
    counts, start = [], 0.0
    for shot in plan.shots:
        end = start + shot.duration_sec
        counts.append(round(end * fps) - round(start * fps))
        start = end
    return counts


def shot_bounds(counts: list[int], fps: float) -> list[tuple[float, float]]:
    """(start_s, end_s) of every shot in the film, from its frame counts."""
    bounds, frame = [], 0
    for count in counts:
        bounds.append((frame / fps, (frame + count) / fps))
        frame += count
    return bounds


def words_by_shot(words: list[dict[str, Any]], bounds: list[tuple[float, float]], sample_rate: int,
                  timeline_samples: int) -> list[list[dict[str, Any]]]:
    """The timeline's words per shot, timed from the shot's start, for lipsync.

    A word belongs to the shot holding most of it (a tie goes to the earlier
    shot), and is clipped at that shot's cuts and at the end of the shot's audio
    (the samples ``round(start * sr):round(end * sr)`` of the timeline, which
    holds ``timeline_samples``): a word spoken across a cut is still one word,
    and lipsync refuses a word that ends after the audio it is given.
    A word with no length left inside any shot is dropped.
    """
    per_shot: list[list[dict[str, Any]]] = [[] for _ in bounds]
    audio_s = [(min(round(end * sample_rate), timeline_samples) - round(start * sample_rate)) / sample_rate
               for start, end in bounds]
    for word in words:
        w_start, w_end = float(word["start_s"]), float(word["end_s"])
        overlaps = [min(w_end, end) - max(w_start, start) for start, end in bounds]
        # Rounded to the nanosecond: float noise must not break a tie that is exact in time.
        best = max(range(len(bounds)), key=lambda i: (round(overlaps[i], 9), -i), default=None)
        if best is None or overlaps[best] <= 0:
            continue
        start = bounds[best][0]
        clipped_start = round(max(w_start, start) - start, 6)
        clipped_end = min(round(w_end - start, 6), audio_s[best])
        if clipped_end > clipped_start:
            per_shot[best].append({**word, "start_s": clipped_start, "end_s": clipped_end})
    for shot_words in per_shot:
        shot_words.sort(key=lambda w: w["start_s"])
    return per_shot

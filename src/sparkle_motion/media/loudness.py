"""EBU R128 loudness measured by ffmpeg (the imageio-ffmpeg binary).

Two independent measurements are offered on purpose: ``measure_loudnorm`` (the
loudnorm filter's first pass, whose values feed its second, normalising pass)
and ``integrated_loudness`` (the ebur128 scanner), so a normalisation done with
one can be checked with the other.  ``measure_ebur128`` gives loudnorm's figures
from the faster scanner; ``gain_filter`` applies them as a plain linear gain.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparkle_motion.errors import BackendError
from sparkle_motion.media.ffmpeg import run_ffmpeg

# Below this the programme is silence for practical purposes: ebur128's absolute
# gate is -70 LUFS, so nothing quieter contributes to integrated loudness.
SILENCE_LUFS = -70.0
DEFAULT_TRUE_PEAK_DBTP = -1.5
DEFAULT_LRA_LU = 11.0


@dataclass(frozen=True)
class LoudnormMeasurement:
    """First-pass loudnorm figures; ``integrated_lufs`` is None for silence."""

    integrated_lufs: float | None
    true_peak_dbtp: float | None
    lra_lu: float | None
    threshold_lufs: float | None

    @property
    def is_silent(self) -> bool:
        return self.integrated_lufs is None or self.integrated_lufs <= SILENCE_LUFS


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # loudnorm prints numbers as strings, "-inf" for silence
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _audio_map(stream: str) -> list[str]:
    return ["-map", f"0:{stream}"]


def measure_loudnorm(path: Path, *, target_lufs: float = -16.0, stream: str = "a:0") -> LoudnormMeasurement:
    """Run loudnorm's analysis pass over an audio stream and parse its JSON report."""
    proc = run_ffmpeg(["-i", str(path), *_audio_map(stream), "-af",
                       f"loudnorm=I={target_lufs}:TP={DEFAULT_TRUE_PEAK_DBTP}:LRA={DEFAULT_LRA_LU}:print_format=json",
                       "-f", "null", "-"])
    text = proc.stderr.decode("utf-8", "replace")
    start = text.rfind("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise BackendError("loudnorm printed no measurement", context={"stderr": text[-2000:]})
    try:
        report = json.loads(text[start:end + 1])
    except json.JSONDecodeError as exc:
        raise BackendError("loudnorm measurement is not JSON", context={"stderr": text[-2000:]}) from exc
    return LoudnormMeasurement(
        integrated_lufs=_finite(report.get("input_i")),
        true_peak_dbtp=_finite(report.get("input_tp")),
        lra_lu=_finite(report.get("input_lra")),
        threshold_lufs=_finite(report.get("input_thresh")),
    )


_SUMMARY = re.compile(
    r"Integrated loudness:\s*I:\s*(?P<i>\S+)\s*LUFS\s*Threshold:\s*(?P<thresh>\S+)\s*LUFS.*?"
    r"Loudness range:\s*LRA:\s*(?P<lra>\S+)\s*LU.*?True peak:\s*Peak:\s*(?P<tp>\S+)\s*dBFS", re.S)


def measure_ebur128(path: Path, *, stream: str = "a:0", target_lufs: float | None = None) -> LoudnormMeasurement:
    """The figures of :func:`measure_loudnorm` from the ebur128 scanner (with 4x true peak) in one pass.

    Same EBU R128 quantities, about twice as fast on speech: loudnorm's analysis
    resamples the whole programme to 192 kHz first. ``target_lufs`` is unused (the
    signature matches ``measure_loudnorm`` so either can drive :func:`make_headroom`).
    """
    del target_lufs
    proc = run_ffmpeg(["-nostats", "-i", str(path), *_audio_map(stream), "-af",
                       "ebur128=peak=true:framelog=quiet", "-f", "null", "-"])
    text = proc.stderr.decode("utf-8", "replace")
    found = list(_SUMMARY.finditer(text))
    if not found:
        raise BackendError("ebur128 printed no summary", context={"stderr": text[-2000:]})
    last = found[-1]
    integrated = _finite(last["i"])
    return LoudnormMeasurement(
        integrated_lufs=None if integrated is None or integrated <= SILENCE_LUFS else integrated,
        true_peak_dbtp=_finite(last["tp"]), lra_lu=_finite(last["lra"]), threshold_lufs=_finite(last["thresh"]))


def gain_filter(measured: LoudnormMeasurement, *, target_lufs: float,
                true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP) -> str:
    """The linear gain to ``target_lufs`` as a ``volume`` filter when the true peak allows it.

    That is what loudnorm's linear mode applies, without its 192 kHz round trip;
    when the peak does not allow it, loudnorm's own (dynamic) second pass.
    """
    if measured.is_silent:
        raise BackendError("cannot loudness-normalise silence", context={"measured": measured.__dict__})
    gain_db = target_lufs - float(measured.integrated_lufs)  # not silent: measured
    peak = measured.true_peak_dbtp if measured.true_peak_dbtp is not None else -99.0
    if peak + gain_db <= true_peak_dbtp:
        return f"volume={gain_db:.3f}dB"
    return loudnorm_filter(measured, target_lufs=target_lufs, true_peak_dbtp=true_peak_dbtp)


def loudnorm_filter(measured: LoudnormMeasurement, *, target_lufs: float,
                    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP, lra_lu: float = DEFAULT_LRA_LU) -> str:
    """The second-pass loudnorm filter using measured values (linear gain when the peak allows).

    loudnorm works at 192 kHz internally, so callers resample afterwards.
    """
    if measured.is_silent:
        raise BackendError("cannot loudness-normalise silence", context={"measured": measured.__dict__})
    lra = measured.lra_lu if measured.lra_lu is not None else 0.0
    tp = measured.true_peak_dbtp if measured.true_peak_dbtp is not None else -99.0
    thresh = measured.threshold_lufs if measured.threshold_lufs is not None else SILENCE_LUFS
    # Widen the LRA target to the measured range: otherwise loudnorm refuses
    # linear mode and switches to dynamic compression, which drifts on short clips.
    lra_target = max(lra_lu, min(50.0, lra + 1.0))
    return (f"loudnorm=I={target_lufs}:TP={true_peak_dbtp}:LRA={lra_target}"
            f":measured_I={measured.integrated_lufs}:measured_TP={tp}"
            f":measured_LRA={lra}:measured_thresh={thresh}:linear=true:print_format=summary")


# alimiter's lowest ceiling (-24 dBFS): a track that needs more gain than this allows
# keeps loudnorm's own fallback.
_MIN_LIMIT = 0.0625
_LIMITER_MARGIN_DB = 0.5  # the limiter works on sample peaks; true peaks sit a little higher
_HEADROOM_PASSES = 4


def make_headroom(path: Path, measured: LoudnormMeasurement, out_path: Path, *, target_lufs: float,
                  true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP,
                  measure: Callable[..., LoudnormMeasurement] | None = None,
                  ) -> tuple[Path, LoudnormMeasurement, float | None]:
    """Limit peaks so that loudnorm's *linear* gain can reach ``target_lufs`` within ``true_peak_dbtp``.

    Speech with sparse loud syllables (a few lines in a long, quiet film) has more
    crest than the gain leaves room for; loudnorm then falls back to dynamic mode,
    which on such tracks stops several LU short of the target. Returns the track to
    normalise, its measurement and the limiter ceiling in dBFS (None when the
    original already had the headroom).
    """
    source, ceiling_db = path, None
    for _ in range(_HEADROOM_PASSES):
        if measured.is_silent or measured.integrated_lufs is None or measured.true_peak_dbtp is None:
            break
        gain_db = target_lufs - measured.integrated_lufs
        if measured.true_peak_dbtp + gain_db <= true_peak_dbtp:
            break
        # Limiting lowers the loudness a little, which asks for more gain: a few passes settle it.
        wanted_db = true_peak_dbtp - _LIMITER_MARGIN_DB - gain_db
        ceiling_db = round(max(20 * math.log10(_MIN_LIMIT), min(wanted_db, ceiling_db or 0.0)), 2)
        run_ffmpeg(["-loglevel", "error", "-i", str(source), "-af",
                    f"alimiter=limit={10 ** (ceiling_db / 20):.5f}:attack=1:release=50:level=false",
                    str(out_path)])
        path, measured = out_path, (measure or measure_loudnorm)(out_path, target_lufs=target_lufs)
    return path, measured, ceiling_db


_EBUR128_I = re.compile(r"Integrated loudness:\s*I:\s*(-?[\d.]+|-inf|nan)\s*LUFS", re.S)


def integrated_loudness(path: Path, *, stream: str = "a:0") -> float | None:
    """Integrated loudness (LUFS) from ffmpeg's ebur128 scanner; None for silence."""
    proc = run_ffmpeg(["-nostats", "-i", str(path), *_audio_map(stream), "-af", "ebur128=framelog=quiet",
                       "-f", "null", "-"])
    text = proc.stderr.decode("utf-8", "replace")
    matches = _EBUR128_I.findall(text)
    if not matches:
        raise BackendError("ebur128 printed no integrated loudness", context={"stderr": text[-2000:]})
    value = _finite(matches[-1])
    return None if value is None or value <= SILENCE_LUFS else value

"""The music bed: a track laid under the whole film and ducked while anyone speaks.

Two ffmpeg runs and one loudness scan:

1. bed — the music looped (``-stream_loop -1``) or trimmed to the film, resampled
   to 48 kHz stereo, faded in and out;
2. its integrated loudness (ebur128), so the bed sits at ``level_lufs`` whatever
   the file's own level;
3. mix — ``sidechaincompress`` keyed by the dialogue lowers the bed while a line
   is spoken, and ``amix`` adds it to the dialogue without normalising.

The key is not the raw dialogue: it is band-limited to speech, lifted and limited
to a steady level, so every line — a whisper or a shout — ducks the bed by about
``duck_db`` (``threshold`` is chosen for that level at ratio 20), while digital
silence between lines never triggers it.  The film's loudness normalisation runs
afterwards on the whole mix (a single gain), so the ducking depth survives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparkle_motion.errors import InvalidInputError
from sparkle_motion.media import run_ffmpeg
from sparkle_motion.media.loudness import integrated_loudness

AUDIO_RATE = 48000
DUCK_RATIO = 20.0  # sidechaincompress's strongest ratio: above threshold the bed is held down, not scaled
KEY_LIFT_DB = 24.0  # speech near -30..-15 dBFS lifts into the limiter; a -70 dB noise floor stays far below threshold
KEY_CEILING = 0.5  # limiter ceiling of the key (-6 dBFS): while speech lasts, the key's RMS sits near -9 dB
KEY_RMS_DB = -9.0
DUCK_ATTACK_MS, DUCK_RELEASE_MS = 15.0, 350.0  # quick under a line's first syllable; held through gaps between words


@dataclass(frozen=True)
class MusicMix:
    """What was done to the bed, for the film's metadata."""

    source_lufs: float
    gain_db: float
    level_lufs: float
    duck_db: float
    fade_s: float
    looped: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def duck_threshold(duck_db: float) -> float:
    """sidechaincompress threshold (linear) that lowers the bed by ``duck_db`` at the key's steady level."""
    over_db = duck_db * DUCK_RATIO / (DUCK_RATIO - 1.0)
    return 10 ** ((KEY_RMS_DB - over_db) / 20)


def render_bed(music_path: Path, out_path: Path, *, film_s: float, fade_s: float, music_s: float | None,
               commands: list[list[str]]) -> bool:
    """The music looped or trimmed to ``film_s``, 48 kHz stereo float, faded at both ends; True when looped."""
    fade = min(fade_s, film_s / 2)
    fades = f"afade=t=in:st=0:d={fade:.3f},afade=t=out:st={film_s - fade:.6f}:d={fade:.3f}" if fade > 0 else "anull"
    looped = music_s is None or music_s < film_s
    args = ["-loglevel", "error", *(["-stream_loop", "-1"] if looped else []), "-i", str(music_path),
            "-map", "0:a:0", "-af",
            f"aresample={AUDIO_RATE},aformat=sample_fmts=flt:channel_layouts=stereo,"
            f"atrim=end={film_s:.6f},asetpts=PTS-STARTPTS,apad=whole_dur={film_s:.6f},{fades}",
            "-t", f"{film_s:.6f}", "-ar", str(AUDIO_RATE), "-ac", "2", "-c:a", "pcm_f32le", "-f", "wav", str(out_path)]
    run_ffmpeg(args)
    commands.append(["ffmpeg", *args])
    return looped


def mix_music_bed(dialogue_wav: Path, music_path: Path, out_path: Path, bed_path: Path, *, film_s: float,
                  music_s: float | None, level_lufs: float, duck_db: float, fade_s: float,
                  commands: list[list[str]], field: str = "music.uri") -> MusicMix:
    """Dialogue + the ducked bed as one 48 kHz stereo float WAV ``film_s`` long."""
    looped = render_bed(music_path, bed_path, film_s=film_s, fade_s=fade_s, music_s=music_s, commands=commands)
    source_lufs = integrated_loudness(bed_path)
    if source_lufs is None:
        raise InvalidInputError("the music is silent", field=field)
    gain_db = level_lufs - source_lufs
    key = (f"highpass=f=120,lowpass=f=5000,volume={KEY_LIFT_DB}dB,"
           f"alimiter=limit={KEY_CEILING}:attack=1:release=20:level=false")
    duck = (f"sidechaincompress=threshold={duck_threshold(duck_db):.6f}:ratio={DUCK_RATIO:g}"
            f":attack={DUCK_ATTACK_MS:g}:release={DUCK_RELEASE_MS:g}:detection=rms:makeup=1")
    graph = (f"[0:a]asplit=2[dialogue][keysrc];[keysrc]{key}[key];"
             f"[1:a]volume={gain_db:.3f}dB[bed];[bed][key]{duck}[ducked];"
             f"[dialogue][ducked]amix=inputs=2:duration=first:normalize=0[mix]")
    args = ["-loglevel", "error", "-i", str(dialogue_wav), "-i", str(bed_path), "-filter_complex", graph,
            "-map", "[mix]", "-t", f"{film_s:.6f}", "-ar", str(AUDIO_RATE), "-ac", "2", "-c:a", "pcm_f32le",
            "-f", "wav", str(out_path)]
    run_ffmpeg(args)
    commands.append(["ffmpeg", *args])
    return MusicMix(source_lufs=source_lufs, gain_db=gain_db, level_lufs=level_lufs, duck_db=duck_db,
                    fade_s=min(fade_s, film_s / 2), looped=looped)

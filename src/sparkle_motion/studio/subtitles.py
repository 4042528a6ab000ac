"""SRT → WebVTT: browsers' <track> reads only WebVTT, assemble_ffmpeg writes SRT."""

from __future__ import annotations

import re

_TIMESTAMP = re.compile(r"(\d{2}:\d{2}:\d{2}),(\d{3})")


def srt_to_vtt(srt: str) -> str:
    """The same cues as WebVTT: a header, '.' for the millisecond comma; cue numbers are kept as cue ids."""
    body = srt.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff").strip()
    lines = [_TIMESTAMP.sub(r"\1.\2", line) if "-->" in line else line for line in body.split("\n")]
    return "WEBVTT\n\n" + "\n".join(lines) + ("\n" if lines else "")

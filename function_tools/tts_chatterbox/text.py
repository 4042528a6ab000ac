"""Split long dialogue into synthesis chunks at natural boundaries.

TTS models (Chatterbox included) degrade or truncate past a few hundred
characters, so every backend synthesizes at most ``max_chars`` at a time:
whole sentences where they fit, else clauses (after , ; :), else words.
Each chunk keeps its character offset into the original text so word timings
can point back at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_CHUNK_CHARS = 280

# A sentence ends at . ! ? … (plus closing quotes/brackets) followed by whitespace.
_SENTENCE_END_RE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_CLAUSE_END_RE = re.compile(r"[,;:—–]+(?=\s)")


@dataclass(frozen=True)
class TextChunk:
    text: str
    offset: int  # character offset of text[0] in the original string
    ends_sentence: bool  # the chunk closes a sentence (a longer pause follows)


def _pieces(text: str, start: int, end: int, boundary: re.Pattern[str]) -> list[tuple[int, int]]:
    """[start, end) cut after every boundary match; whitespace stays attached to the left piece."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in boundary.finditer(text, start, end):
        spans.append((cursor, match.end()))
        cursor = match.end()
    if cursor < end:
        spans.append((cursor, end))
    return spans


def _word_spans(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\S+", text[start:end]):
        s, e = start + match.start(), start + match.end()
        # a single "word" longer than the limit (a URL, a run of letters) is cut hard
        while e - s > max_chars:
            spans.append((s, s + max_chars))
            s += max_chars
        spans.append((s, e))
    return spans


def _pack(text: str, spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Greedily merge consecutive spans while the stripped result fits in max_chars."""
    packed: list[tuple[int, int]] = []
    for s, e in spans:
        if packed and len(text[packed[-1][0]:e].strip()) <= max_chars:
            packed[-1] = (packed[-1][0], e)
        else:
            packed.append((s, e))
    return packed


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> list[TextChunk]:
    """Chunks of at most ``max_chars`` (after stripping), in order, covering every word of ``text``."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if len(text.strip()) <= max_chars:
        stripped = text.strip()
        return [TextChunk(stripped, len(text) - len(text.lstrip()), True)] if stripped else []

    units: list[tuple[int, int, bool]] = []  # (start, end, ends_sentence)
    for s_start, s_end in _pieces(text, 0, len(text), _SENTENCE_END_RE):
        if len(text[s_start:s_end].strip()) <= max_chars:
            units.append((s_start, s_end, True))
            continue
        clauses = _pieces(text, s_start, s_end, _CLAUSE_END_RE)
        fine: list[tuple[int, int]] = []
        for c_start, c_end in clauses:
            if len(text[c_start:c_end].strip()) <= max_chars:
                fine.append((c_start, c_end))
            else:
                fine.extend(_word_spans(text, c_start, c_end, max_chars))
        packed = _pack(text, fine, max_chars)
        units.extend((s, e, i == len(packed) - 1) for i, (s, e) in enumerate(packed))

    chunks: list[TextChunk] = []
    current: tuple[int, int, bool] | None = None
    for start, end, ends_sentence in units:
        # sentences are packed together too: fewer, longer chunks keep the prosody natural
        if current and current[2] and len(text[current[0]:end].strip()) <= max_chars:
            current = (current[0], end, ends_sentence)
            continue
        if current:
            chunks.append(_chunk(text, *current))
        current = (start, end, ends_sentence)
    if current:
        chunks.append(_chunk(text, *current))
    return [c for c in chunks if c.text]


def _chunk(text: str, start: int, end: int, ends_sentence: bool) -> TextChunk:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    return TextChunk(piece.strip(), start + lead, ends_sentence)

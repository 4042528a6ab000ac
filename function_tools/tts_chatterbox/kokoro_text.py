"""Text → Kokoro phonemes with eSpeak NG, and the model's phoneme times → word and phoneme timings.

Phonemes.  Kokoro reads IPA as eSpeak NG writes it (kokoro-onnx phonemizes
with ``phonemizer``'s eSpeak backend, stress marks and punctuation kept).  A
language is spoken by Kokoro when eSpeak phonemizes it and every phoneme it
writes is in Kokoro's vocabulary; anything else (tone numbers of Mandarin,
Vietnamese or Cantonese, eSpeak's kanji placeholders for Japanese, a
phoneme such as Arabic ħ that Kokoro never learned) would be dropped
silently and mispronounced, so such a line is :class:`Unspeakable` and the
backend speaks it with eSpeak instead.  Combining diacritics Kokoro lacks
(English syllabic ``n̩``) only refine a phoneme it has, and are left out.  Text in another script inside a line
(eSpeak's ``(en)…(fr)`` language-switch flags) is phonemized with the flags
removed.

Timings.  The model reports how many frames it spends on each phoneme token
(see kokoro_model), so every phoneme has a start and an end.  eSpeak
separates words with spaces but writes some word pairs as one ("on the" →
``ɔnðə``) and some words as several ("42" → ``fˈɔːɹɾi tˈuː``); words are
matched to space-separated groups by a small dynamic programme over phoneme
counts (each word phonemized alone gives its expected count).  A word that
has a group or groups to itself gets their exact span; words sharing a group
split it by their phoneme counts and are marked ``estimated``.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from function_tools.tts_chatterbox.models import PhonemeTiming

WORD_RE = re.compile(r"\w[\w'’]*", re.UNICODE)
STRESS_MARKS = frozenset("ˈˌ")
_MAX_JOIN = 4  # at most this many words share one group, or groups one word


class Unspeakable(Exception):
    """eSpeak cannot phonemize the text for Kokoro in this language; ``reason`` says why."""

    def __init__(self, reason: str, **context: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.context = context


def is_pause(symbol: str) -> bool:
    """Spaces and punctuation: the model times them, but nobody speaks them."""
    return symbol.isspace() or unicodedata.category(symbol)[0] in "PZ"


def _is_diacritic(symbol: str) -> bool:
    """A combining mark (syllabic ̩, lowered ̞, …): it refines the phoneme before it and can be left out."""
    return unicodedata.category(symbol) == "Mn"


def _sounds(phonemes: str) -> int:
    return sum(1 for c in phonemes if not is_pause(c) and c not in STRESS_MARKS)


class Phonemizer:
    """eSpeak NG phonemizers per language (phonemizer's eSpeak backend, built once each)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self._backends: dict[str, object] = {}
        self._lock = threading.Lock()  # libespeak-ng behind phonemizer is one set of globals

    def _backend(self, language: str) -> object:
        if language not in self._backends:
            from phonemizer.backend import EspeakBackend

            try:
                self._backends[language] = EspeakBackend(language, preserve_punctuation=True, with_stress=True,
                                                         language_switch="remove-flags")
            except RuntimeError as exc:  # "language ... is not supported by the espeak backend"
                raise Unspeakable(f"eSpeak's phonemizer has no language {language!r}", language=language,
                                  error=str(exc)) from None
        return self._backends[language]

    def phonemize(self, texts: Sequence[str], language: str) -> list[str]:
        """IPA per text, whitespace normalised; raises Unspeakable when Kokoro lacks a phoneme."""
        with self._lock:
            backend = self._backend(language)
            raw = backend.phonemize(list(texts), strip=True, njobs=1)  # type: ignore[attr-defined]
        out = []
        for text, phonemes in zip(texts, raw):
            unknown = sorted({c for c in phonemes if c not in self.vocab and not is_pause(c) and not _is_diacritic(c)})
            if unknown:
                raise Unspeakable(f"eSpeak writes {language!r} with phonemes Kokoro never learned: "
                                  f"{' '.join(unknown)}", language=language, unknown=unknown, text=text[:80])
            out.append(" ".join("".join(c for c in phonemes if c in self.vocab or c.isspace()).split()))
        return out


@dataclass(frozen=True)
class TimedPhoneme:
    """One model token and when it is spoken, in seconds from the start of its audio."""

    symbol: str
    start: float
    end: float


@dataclass
class _Group:
    tokens: list[TimedPhoneme]
    reach: float  # where the word may end: its last sound, or the end of a space after it (not of punctuation)


def _groups(timed: Sequence[TimedPhoneme]) -> list[_Group]:
    """Space-separated groups of sounding tokens (stress marks kept, punctuation not).

    The model spends frames on the space between two words, often the audible
    glide from one to the next, so a group may reach over a following space;
    punctuation is a pause, so a group never reaches over it.
    """
    groups: list[_Group] = []
    current: list[TimedPhoneme] = []
    last: _Group | None = None
    for t in timed:
        if t.symbol.isspace():
            if current:
                last = _Group(current, current[-1].end)
                groups.append(last)
                current = []
            if last is not None:
                last.reach = max(last.reach, t.end)
        elif is_pause(t.symbol):
            if current:
                groups.append(_Group(current, current[-1].end))
                current = []
            last = None
        else:
            current.append(t)
    if current:
        groups.append(_Group(current, current[-1].end))
    return [g for g in groups if any(t.symbol not in STRESS_MARKS for t in g.tokens)]


def _align(expected: Sequence[int], found: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Blocks (word_from, word_to, group_from, group_to) matching words to groups, in order.

    Each block is one word to 1..4 groups or 2..4 words to one group; the
    alignment minimises the total difference in phoneme counts, with a small
    charge per merge so one-to-one wins ties.
    """
    n, m = len(expected), len(found)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i][j] == inf:
                continue
            for a, b in [(1, b) for b in range(1, _MAX_JOIN + 1)] + [(a, 1) for a in range(2, _MAX_JOIN + 1)]:
                if i + a > n or j + b > m:
                    continue
                c = cost[i][j] + abs(sum(expected[i:i + a]) - sum(found[j:j + b])) + 0.5 * (a + b - 2)
                if c < cost[i + a][j + b]:
                    cost[i + a][j + b], back[i + a][j + b] = c, (a, b)
    if cost[n][m] == inf:
        return [(0, n, 0, m)] if n and m else []
    blocks = []
    i, j = n, m
    while i or j:
        step = back[i][j]
        assert step is not None
        a, b = step
        blocks.append((i - a, i, j - b, j))
        i, j = i - a, j - b
    return blocks[::-1]


def word_timings(text: str, offset: int, timed: Sequence[TimedPhoneme], word_phonemes: Callable[[list[str]], list[str]],
                 ) -> list[tuple[int, int, float, float, float, bool]]:
    """(char start, char end, start s, end s, reach s, estimated) for every word of ``text``.

    ``offset`` is the text's position in the request; ``word_phonemes``
    phonemizes a list of words (for their expected phoneme counts).  ``end``
    is where the word's last phoneme ends, ``reach`` how far its sound may
    run on (over a following space, never over punctuation).
    """
    tokens = [(m.start(), m.end()) for m in WORD_RE.finditer(text)]
    groups = _groups(timed)
    if not tokens or not groups:
        return []
    expected = [max(1, _sounds(p)) for p in word_phonemes([text[a:b] for a, b in tokens])]
    found = [_sounds("".join(t.symbol for t in g.tokens)) for g in groups]
    out = []
    for w0, w1, g0, g1 in _align(expected, found):
        start, end, reach = groups[g0].tokens[0].start, groups[g1 - 1].tokens[-1].end, groups[g1 - 1].reach
        weights = expected[w0:w1]
        total, acc = float(sum(weights)), 0.0
        for k in range(w0, w1):
            s = start + (end - start) * acc / total
            acc += weights[k - w0]
            e = start + (end - start) * acc / total
            out.append((offset + tokens[k][0], offset + tokens[k][1], s, e, reach if k == w1 - 1 else e, w1 - w0 > 1))
    return out


def phoneme_timings(timed: Sequence[TimedPhoneme]) -> list[PhonemeTiming]:
    """Spoken phonemes: a stress mark joins the sound after it, modifiers (ː ʲ ̃ …) the sound before."""
    out: list[PhonemeTiming] = []
    stress: TimedPhoneme | None = None
    for t in timed:
        if is_pause(t.symbol):
            stress = None
            continue
        if t.symbol in STRESS_MARKS:
            stress = stress or t
            continue
        modifier = unicodedata.category(t.symbol) in ("Lm", "Mn", "Sk") and t.symbol not in "ʔ"
        if modifier and out and stress is None:
            last = out[-1]
            out[-1] = PhonemeTiming(phoneme=last.phoneme + t.symbol, start_s=last.start_s, end_s=t.end)
            continue
        start = stress.start if stress is not None else t.start
        out.append(PhonemeTiming(phoneme=(stress.symbol if stress else "") + t.symbol, start_s=start, end_s=t.end))
        stress = None
    return out

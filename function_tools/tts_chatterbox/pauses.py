"""The silence between synthesis chunks, the same for every tts_chatterbox backend.

Long lines are spoken chunk by chunk (``text.split_text``); a chunk that closes
a sentence is followed by a longer pause than one that closes a clause.  Both
backends join their chunks with these pauses, so the timing of a line does not
depend on which backend spoke it.
"""

from __future__ import annotations

import numpy as np

from function_tools.tts_chatterbox.text import TextChunk

SENTENCE_PAUSE_S = 0.32
CLAUSE_PAUSE_S = 0.18


def pause_after(chunk: TextChunk, sample_rate: int) -> np.ndarray:
    """float32 silence to put after ``chunk`` when another chunk follows it."""
    pause = SENTENCE_PAUSE_S if chunk.ends_sentence else CLAUSE_PAUSE_S
    return np.zeros(int(round(pause * sample_rate)), dtype=np.float32)

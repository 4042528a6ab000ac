"""Backend ``espeak``: real speech from eSpeak NG on CPU, with word and phoneme timings.

The engine lives in ``espeak_speech.py`` because the ``kokoro`` backend speaks the
lines Kokoro cannot with it too, and one backend module never imports another.
"""

from __future__ import annotations

from function_tools.tts_chatterbox.espeak_speech import EspeakBackend, Speech, installed_variants, synthesize_speech

__all__ = ["EspeakBackend", "Speech", "installed_variants", "synthesize_speech"]

"""tts_chatterbox: dialogue lines → speech WAV with word/phoneme timings."""

from __future__ import annotations

from function_tools.tts_chatterbox.models import TtsChatterboxRequest, TtsChatterboxResponse
from sparkle_motion.services import ToolSpec

SPEC = ToolSpec(
    tool_id="tts_chatterbox",
    version="1.0.0",
    request_model=TtsChatterboxRequest,
    response_model=TtsChatterboxResponse,
    backends={
        "espeak": "function_tools.tts_chatterbox.espeak:EspeakBackend",
        "chatterbox": "function_tools.tts_chatterbox.chatterbox:ChatterboxBackend",
        "kokoro": "function_tools.tts_chatterbox.kokoro:KokoroBackend",
    },
    # 5000 characters of UTF-8 plus the voice profile fit well inside 64 KiB.
    max_body_bytes=64 * 1024,
    description="Speech for one line of dialogue: mono 16-bit WAV plus word and phoneme timings.",
)

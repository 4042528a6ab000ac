"""The `mux` backend: put the dialogue onto the clip without touching its pixels.

What it does, and no more: the video stream is copied bit for bit, the audio is
encoded to AAC (padded or trimmed to the video when the request allows), and an
alignment map says where the speech falls on the clip's frames so later stages
(subtitles, QA, a GPU lipsync pass) can use it. It does not move any lips, and
its outputs say so (``lip_motion: false``).

The work itself is :func:`~function_tools.lipsync_wav2lip.audio_mux.mux_dialogue`,
which the ``wav2lip`` backend's fallback calls too.
"""

from __future__ import annotations

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.audio_mux import checked_ffmpeg, mux_dialogue
from function_tools.lipsync_wav2lip.models import LipsyncRequest, LipsyncResponse


class MuxBackend:
    """Mux dialogue onto a clip (video stream copy + AAC) and map speech to frames."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    def load(self) -> None:
        # Fail at start-up, not on the first request, if the ffmpeg binary is unusable.
        self.ffmpeg = checked_ffmpeg()

    def invoke(self, request: LipsyncRequest, ctx: ToolContext) -> LipsyncResponse:
        return mux_dialogue(request, ctx, self.ffmpeg)

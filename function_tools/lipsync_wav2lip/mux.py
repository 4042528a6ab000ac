"""The `mux` backend: put the dialogue onto the clip, moving a storyboard speaker's mouth where it can.

What it does, and no more: the audio is encoded to AAC (padded or trimmed to the
video when the request allows), and an alignment map says where the speech falls
on the clip's frames so later stages (subtitles, QA, a GPU lipsync pass) can use
it.  The video stream is copied bit for bit (``lip_motion: false``), except for a
storyboard clip whose metadata records its faces' mouths, given word timings:
there the speaker's mouth opens on the words and the shot is re-encoded with the
clip's own settings (``lip_motion: true``; see ``mouth_motion.py``).

The work itself is :func:`~function_tools.lipsync_wav2lip.audio_mux.mux_dialogue`,
which the ``wav2lip`` backend's fallback calls too.
"""

from __future__ import annotations

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.services import ToolContext

from function_tools.lipsync_wav2lip.audio_mux import checked_ffmpeg, mux_dialogue
from function_tools.lipsync_wav2lip.models import LipsyncRequest, LipsyncResponse


class MuxBackend:
    """Mux dialogue onto a clip (video stream copy, or redrawn mouths, + AAC) and map speech to frames."""

    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    def load(self) -> None:
        # Fail at start-up, not on the first request, if the ffmpeg binary is unusable.
        self.ffmpeg = checked_ffmpeg()

    def invoke(self, request: LipsyncRequest, ctx: ToolContext) -> LipsyncResponse:
        return mux_dialogue(request, ctx, self.ffmpeg)

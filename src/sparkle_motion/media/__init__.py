"""Media helpers shared by the FunctionTools: the ffmpeg binary, probing, decoding, WAV I/O."""

from sparkle_motion.media.audio import read_wav, write_wav
from sparkle_motion.media.ffmpeg import (
    MediaInfo,
    StreamInfo,
    VideoWriter,
    decode_video_frames,
    ffmpeg_exe,
    probe,
    run_ffmpeg,
)

__all__ = [
    "MediaInfo",
    "StreamInfo",
    "VideoWriter",
    "decode_video_frames",
    "ffmpeg_exe",
    "probe",
    "read_wav",
    "run_ffmpeg",
    "write_wav",
]

"""``python -m function_tools.lipsync_wav2lip`` serves the tool on its registry port."""

from sparkle_motion.services import serve

if __name__ == "__main__":
    serve("lipsync_wav2lip")

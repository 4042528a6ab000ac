"""``python -m function_tools.assemble_ffmpeg`` serves the tool on its registry port."""

from sparkle_motion.services import serve

if __name__ == "__main__":
    serve("assemble_ffmpeg")

"""python -m function_tools.tts_chatterbox  ==  sparkle-motion serve tts_chatterbox"""

from sparkle_motion.services import serve

if __name__ == "__main__":
    serve("tts_chatterbox")

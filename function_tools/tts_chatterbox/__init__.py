"""tts_chatterbox FunctionTool: text → speech (CPU backend ``espeak``; Chatterbox on GPU)."""

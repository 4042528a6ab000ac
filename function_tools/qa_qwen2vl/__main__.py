"""``python -m function_tools.qa_qwen2vl`` serves the tool on its registry port."""

from sparkle_motion.services import serve

if __name__ == "__main__":
    serve("qa_qwen2vl")

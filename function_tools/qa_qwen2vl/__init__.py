"""qa_qwen2vl: QA of rendered media (CPU `signal` measurements; GPU `qwen2-vl` vision checks later)."""

"""lipsync_wav2lip: put a dialogue track onto a clip (CPU `mux`; GPU `wav2lip` later)."""

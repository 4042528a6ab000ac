"""images_sdxl: keyframe images from a prompt (see docs/tools/images_sdxl.md)."""

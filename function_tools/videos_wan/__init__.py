"""videos_wan: a clip between two keyframes (see docs/tools/videos_wan.md)."""

"""The web studio: static pages production_agent serves at ``/`` and the thin routes they need (docs/studio.md)."""

from sparkle_motion.studio.routes import install_studio

__all__ = ["install_studio"]

"""A backend whose load() fails, as a missing model would."""

from __future__ import annotations

from function_tools.echo.backend import EchoBackend


class BrokenEchoBackend(EchoBackend):
    def load(self) -> None:
        raise FileNotFoundError("echo weights not found: /nonexistent/echo.safetensors")

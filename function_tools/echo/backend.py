"""Echo backends: real store round-trips, no models."""

from __future__ import annotations

import math
import time
from pathlib import Path

from function_tools.echo.models import EchoRequest, EchoResponse
from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import InvalidInputError
from sparkle_motion.services import ToolContext

MAX_INPUT_BYTES = 64 * 1024
RELEASE_FILE = "echo-slow.release"
HOLD_STEP_S = 0.05


class EchoBackend:
    def __init__(self, profile: ToolProfile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings

    def load(self) -> None:
        return None

    def invoke(self, request: EchoRequest, ctx: ToolContext) -> EchoResponse:
        pieces = [request.text * request.repeat]
        for index, item in enumerate(request.inputs):
            field = f"inputs[{index}].uri"
            manifest, path = ctx.resolve_input(item.uri, field)
            if manifest.size_bytes > MAX_INPUT_BYTES:
                raise InvalidInputError(f"input artifact is {manifest.size_bytes} bytes; echo reads at most "
                                        f"{MAX_INPUT_BYTES}", field=field)
            try:
                pieces.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise InvalidInputError("input artifact is not UTF-8 text", field=field) from None
        if request.fail:
            raise RuntimeError("echo asked to fail (fail=true)")
        text = "\n".join(pieces)
        data = text.encode("utf-8")
        # Written to staging first and moved in, the way media backends do it; staged
        # before the hold, so a process killed mid-hold leaves a staging file (the sweep's test).
        staged = ctx.staging_path(".txt")
        staged.write_bytes(data)
        deadline = time.monotonic() + request.hold_s
        steps, step = math.ceil(request.hold_s / HOLD_STEP_S), 0
        while time.monotonic() < deadline:  # one "step" per HOLD_STEP_S, like a backend's frame loop
            time.sleep(min(HOLD_STEP_S, max(deadline - time.monotonic(), 0.0)))
            step = min(step + 1, steps)
            ctx.progress(step, steps, "hold")
        if step < steps:     # a loaded machine oversleeps: the hold is over, so are its steps
            ctx.progress(steps, steps, "hold")
        ctx.check_cancelled()
        manifest = ctx.put_output(request, "text", staged, "text/plain; charset=utf-8",
                                  {"params": {"repeat": request.repeat, "inputs": len(request.inputs)}},
                                  ext=".txt", move=True)
        ctx.log.info("echo.stored", uri=manifest.uri, size_bytes=len(data))
        return EchoResponse(text=text, size_bytes=len(data), artifacts=[manifest])


class SlowEchoBackend(EchoBackend):
    """load() blocks until ``$SPARKLE_HOME/echo-slow.release`` exists, so a test controls warm-up exactly."""

    def load(self) -> None:
        release = Path(self.settings.home) / RELEASE_FILE
        deadline = time.monotonic() + 60
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{release} did not appear within 60s")
            time.sleep(0.05)


class BrokenEchoBackend(EchoBackend):
    """A backend whose load() fails, as a missing model would."""

    def load(self) -> None:
        raise FileNotFoundError("echo weights not found: /nonexistent/echo.safetensors")

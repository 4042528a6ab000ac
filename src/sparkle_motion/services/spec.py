"""ToolSpec: everything the framework needs to serve one FunctionTool."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sparkle_motion.config import Settings, ToolProfile
from sparkle_motion.errors import ConfigError
from sparkle_motion.ids import is_valid_id
from sparkle_motion.services.models import ToolRequest, ToolResponse

DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """Declarative description of a FunctionTool.

    ``backends`` maps a backend name to an import string ``"package.module:Class"``.
    Only the active backend's module is imported (in the service's warm-up
    thread), so a CPU process never imports a GPU stack it does not use.

    A backend class is built as ``Backend(profile, settings)``; ``load()`` runs
    once at start-up (``/ready`` answers 503 until it returns) and
    ``invoke(request, ctx)`` returns a ``response_model`` instance.  An optional
    ``close()`` runs at shutdown.
    """

    tool_id: str
    version: str
    request_model: type[ToolRequest]
    response_model: type[ToolResponse]
    backends: Mapping[str, str]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = 1
    # How long an /invoke waits for a free slot before answering 503 busy.
    busy_wait_s: float = 0.5
    description: str = ""

    def __post_init__(self) -> None:
        if not is_valid_id(self.tool_id):
            raise ConfigError(f"ToolSpec.tool_id {self.tool_id!r} is not a safe id", field="tool_id")
        if not (isinstance(self.request_model, type) and issubclass(self.request_model, ToolRequest)):
            raise ConfigError(f"{self.tool_id}: request_model must subclass ToolRequest", field="request_model")
        if not (isinstance(self.response_model, type) and issubclass(self.response_model, ToolResponse)):
            raise ConfigError(f"{self.tool_id}: response_model must subclass ToolResponse", field="response_model")
        if not self.backends:
            raise ConfigError(f"{self.tool_id}: at least one backend is required", field="backends")
        for name, target in self.backends.items():
            module, _, attr = str(target).partition(":")
            if not name or not module or not attr:
                raise ConfigError(f"{self.tool_id}: backend {name!r} must be 'package.module:Class' (got {target!r})",
                                  field=f"backends.{name}")
        if self.max_body_bytes <= 0:
            raise ConfigError(f"{self.tool_id}: max_body_bytes must be > 0", field="max_body_bytes")
        if self.max_concurrency < 1:
            raise ConfigError(f"{self.tool_id}: max_concurrency must be >= 1", field="max_concurrency")
        if self.busy_wait_s < 0:
            raise ConfigError(f"{self.tool_id}: busy_wait_s must be >= 0", field="busy_wait_s")
        # A read-only copy: a spec is shared module state and must not drift at runtime.
        object.__setattr__(self, "backends", MappingProxyType(dict(self.backends)))


def import_string(target: str, *, what: str = "object") -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted)."""
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {what} module {module_name!r}: {exc}",
                          context={"target": target, "exception_type": type(exc).__name__}) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {target!r}: module {module_name!r} has no attribute {attr_path!r}",
                              context={"target": target}) from None
    return obj


def resolve_profile(spec: ToolSpec, settings: Settings) -> ToolProfile:
    """Which backend/model/options this process runs for ``spec``.

    A tool in the registry takes its profile from the settings (which already
    applied ``SPARKLE_<TOOL>_BACKEND``).  A tool outside the registry — the
    framework's test-only ``echo`` — has no profile entry, so the same
    ``SPARKLE_<TOOL>_BACKEND`` convention is read here, defaulting to the
    spec's first backend.
    """
    if spec.tool_id in settings.tools:
        profile = settings.tool_profile(spec.tool_id)
    else:
        env_key = f"SPARKLE_{spec.tool_id.upper()}_BACKEND"
        backend = os.environ.get(env_key) or next(iter(spec.backends))
        profile = ToolProfile(backend=backend, model=backend, options={})
    if profile.backend not in spec.backends:
        raise ConfigError(
            f"tool {spec.tool_id!r} has no backend {profile.backend!r}; it implements: {', '.join(spec.backends)}",
            field=f"SPARKLE_{spec.tool_id.upper()}_BACKEND",
        )
    return profile

"""The profile's engine settings: ``engine: local | ray``, the ``ray:`` block and each tool's ``ray:`` entry.

Why a module of its own: config.py is the one place that *reads* configuration, and these
are the dataclasses and checks it uses for the engine part, kept apart so that config.py
stays the registry + profile reader it is.

``engine: local`` (the default) runs one uvicorn process per service under the mesh
supervisor. ``engine: ray`` serves every FunctionTool as a Ray Serve deployment
(``sparkle_motion/ray_engine.py``) behind Serve's HTTP proxy, one route prefix per tool
(``http://127.0.0.1:<http_port>/<tool_id>``); the two agents stay supervised processes.

Profile::

    engine: ray
    ray:
      address: null          # null: start a local Ray instance; "ray://h:10001" or "h:6379": join a cluster
      http_port: 8000        # Serve's proxy (bound to 127.0.0.1)
      num_cpus: 2            # the local instance's CPUs (ignored when joining a cluster)
      object_store_mb: 100   # the local instance's object store (the tools pass no objects through it)
    tools:
      videos_wan: {backend: ..., ray: {num_replicas: 2, num_cpus: 1, num_gpus: 1}, max_fan_out: 4}

Env overrides (with SPARKLE_PROFILE and the others in config.py): ``SPARKLE_ENGINE`` and
``SPARKLE_RAY_ADDRESS``, which ``sparkle-motion up --engine ray --address ADDR`` sets for the
processes it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparkle_motion.errors import ConfigError

ENGINES = ("local", "ray")
#: The most replicas one tool may ask for (a fan-out never uses more than MAX_FAN_OUT of them anyway).
MAX_REPLICAS = 64


@dataclass(frozen=True)
class RaySettings:
    """The profile's ``ray:`` block: where Serve runs and how big a local instance is."""

    address: str | None = None
    http_port: int = 8000
    num_cpus: int = 2
    object_store_mb: int = 100


@dataclass(frozen=True)
class RayToolSettings:
    """One tool's ``ray:`` entry: how many replicas, and what each one holds of a node.

    ``min_replicas``/``max_replicas`` (both or neither) turn on Serve's autoscaling between
    them instead of a fixed ``num_replicas``. ``num_gpus`` may be fractional (two replicas of a
    small model on one card); a replica that only waits (the test-only ``sleep`` backend) may
    take ``num_cpus: 0``.
    """

    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    #: A quarter CPU by default: seven tools' replicas fit a 2-CPU instance, and a CPU backend
    #: still uses what the OS gives it (Ray reserves, it does not pin).
    num_cpus: float = 0.25
    num_gpus: float = 0.0

    @property
    def most_replicas(self) -> int:
        """The replicas a fan-out may count on: the fixed number, or the autoscaling ceiling."""
        return self.max_replicas if self.max_replicas is not None else self.num_replicas


def _int_in(value: Any, lowest: int, highest: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ConfigError(f"{where} must be an integer from {lowest} to {highest} (got {value!r:.40})", field=where)
    return value


def _number_in(value: Any, lowest: float, highest: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
        raise ConfigError(f"{where} must be a number from {lowest:g} to {highest:g} (got {value!r:.40})", field=where)
    return float(value)


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping", field=where)
    return raw


def _known_keys(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                          field=f"{where}.{unknown[0]}")


def parse_engine(raw_profile: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, RaySettings]:
    """The profile's ``engine`` and ``ray:`` block, with ``SPARKLE_ENGINE`` / ``SPARKLE_RAY_ADDRESS`` applied."""
    engine = env.get("SPARKLE_ENGINE") or raw_profile.get("engine") or "local"
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r:.40})", field="engine")
    raw = _mapping(raw_profile.get("ray"), "ray")
    _known_keys(raw, {"address", "http_port", "num_cpus", "object_store_mb"}, "ray")
    address = env.get("SPARKLE_RAY_ADDRESS") or raw.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError("ray.address must be a Ray address such as 10.0.0.5:6379", field="ray.address")
    return engine, RaySettings(
        address=address or None,
        http_port=_int_in(raw.get("http_port", 8000), 1, 65535, "ray.http_port"),
        num_cpus=_int_in(raw.get("num_cpus", 2), 1, 1024, "ray.num_cpus"),
        object_store_mb=_int_in(raw.get("object_store_mb", 100), 75, 1 << 20, "ray.object_store_mb"),
    )


def parse_tool_ray(raw_tool: Mapping[str, Any], where: str) -> tuple[RayToolSettings, int | None]:
    """A tool entry's ``ray:`` settings and its ``max_fan_out`` (the cap on the capacity it reports)."""
    raw = _mapping(raw_tool.get("ray"), f"{where}.ray")
    _known_keys(raw, {"num_replicas", "min_replicas", "max_replicas", "num_cpus", "num_gpus"}, f"{where}.ray")
    low, high = raw.get("min_replicas"), raw.get("max_replicas")
    if (low is None) != (high is None):
        raise ConfigError(f"{where}.ray: give both min_replicas and max_replicas (autoscaling) or neither",
                          field=f"{where}.ray.min_replicas")
    if low is not None:
        low = _int_in(low, 0, MAX_REPLICAS, f"{where}.ray.min_replicas")
        high = _int_in(high, max(1, low), MAX_REPLICAS, f"{where}.ray.max_replicas")
    settings = RayToolSettings(
        num_replicas=_int_in(raw.get("num_replicas", 1), 1, MAX_REPLICAS, f"{where}.ray.num_replicas"),
        min_replicas=low, max_replicas=high,
        num_cpus=_number_in(raw.get("num_cpus", RayToolSettings.num_cpus), 0.0, 1024.0, f"{where}.ray.num_cpus"),
        num_gpus=_number_in(raw.get("num_gpus", 0.0), 0.0, 64.0, f"{where}.ray.num_gpus"),
    )
    cap = raw_tool.get("max_fan_out")
    return settings, None if cap is None else _int_in(cap, 1, MAX_REPLICAS, f"{where}.max_fan_out")

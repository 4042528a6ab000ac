"""The one source of configuration: the tool registry, a profile file, a few env overrides.

* ``configs/tool_registry.yaml`` — the mesh: host, ports, modules, allowed backends.
* ``configs/profiles/<name>.yaml`` — which backend and model each tool runs, plus
  per-tool options; ``SPARKLE_PROFILE`` names a profile (``cpu``, ``gpu``) or a
  path to a profile file.
* Env overrides, and no others: ``SPARKLE_PROFILE``, ``SPARKLE_HOME`` (artifact
  root, default ``./.sparkle``), ``SPARKLE_<TOOL>_BACKEND`` (e.g.
  ``SPARKLE_IMAGES_SDXL_BACKEND=storyboard``) and ``SPARKLE_TOKEN`` (bearer token,
  required to bind a non-loopback address: at least 16 characters, no whitespace),
  and for the engine ``SPARKLE_ENGINE`` and ``SPARKLE_RAY_ADDRESS`` (``engine_config.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sparkle_motion.engine_config import RaySettings, RayToolSettings, parse_engine, parse_tool_ray
from sparkle_motion.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
DEFAULT_PROFILE = "cpu"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def project_path(relative: str) -> Path:
    """Locate a project data file (configs/, db/schema/, schemas/).

    Works from a source checkout (editable install) and from a wheel, which
    carries the same files under ``sparkle_motion/_data``.
    """
    for base in (PACKAGE_DIR / "_data", REPO_ROOT):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise ConfigError(f"project file not found: {relative}", context={"searched": [str(PACKAGE_DIR / '_data'), str(REPO_ROOT)]})


MIN_TOKEN_CHARS = 16


def token_problem(token: str) -> str | None:
    """Why ``token`` may not guard a service reachable from the network, or None if it may.

    A token of ``x`` is guessed at once, and one with a space (``" "``) can never
    be sent in a bearer header; neither is protection worth binding 0.0.0.0 for.
    """
    if any(ch.isspace() for ch in token):
        return "must not contain spaces or other whitespace"
    if len(token) < MIN_TOKEN_CHARS:
        return f"must be at least {MIN_TOKEN_CHARS} characters (got {len(token)})"
    return None


@dataclass(frozen=True)
class ToolEntry:
    tool_id: str
    port: int
    module: str
    backends: tuple[str, ...]
    python: str | None = None

    @property
    def is_agent(self) -> bool:
        """An agent service (script_agent, production_agent): a supervised process on every engine."""
        return self.module.startswith("sparkle_motion.agents.")


@dataclass(frozen=True)
class ToolProfile:
    """One tool's entry in a profile: backend, model, the backend's options, and how callers run its work.

    ``long_running``: callers (``ToolClient``) submit the work as a job (``POST /jobs``)
    and poll it, instead of holding one HTTP request open for the whole render.
    ``max_job_s``: the tool cancels a job running longer and fails it with ``job_timeout``
    (None: no limit but the work's own end; the client gives up a minute after it). ``test_step_delay_s``: test-only; every progress
    report of the tool's backend waits this long (cancellable), to make a tiny model
    render as slowly as a real one. These are read by the framework, not the backend.
    """

    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    # Calls the tool serves at once; None keeps its ToolSpec's. A cpu backend that holds
    # no model can take several; a GPU one stays at 1.
    max_concurrency: int | None = None
    long_running: bool = False
    max_job_s: float | None = None
    test_step_delay_s: float = 0.0
    #: Replicas and their resources when the engine is ray (engine_config.py).
    ray: RayToolSettings = field(default_factory=RayToolSettings)
    #: The most items a stage fans out to this tool at once, whatever capacity it reports.
    max_fan_out: int | None = None


@dataclass(frozen=True)
class SweepSettings:
    """What the crash-leftover sweep may remove (profile section ``sweep``).

    ``longest_job_s``: no call runs longer, so a staging file older than this
    belongs to a call that died.  ``unreferenced_grace_s``: an artifact of a
    production run that no step (nor the run's plan) names after this long was
    orphaned by a crash between the tool's put and the step's record.
    """

    longest_job_s: float = 6 * 3600.0
    unreferenced_grace_s: float = 24 * 3600.0


@dataclass(frozen=True)
class ClientPolicy:
    """How long a caller waits for a service instead of failing (profile block ``client:``).

    ``busy_wait_s``: a tool that answers 503 busy / warming up is retried (Retry-After,
    with jitter) until this many seconds have passed since the first such answer.
    ``restart_wait_s``: a service that the mesh supervisor manages and that refuses the
    connection or drops it mid-call (crashed, restarting) is waited for this long.
    ``read_timeout_s``: how long one HTTP answer may take; a tool the profile marks
    ``long_running`` answers at once (a job), so this never bounds its work.
    """

    busy_wait_s: float = 3600.0
    restart_wait_s: float = 120.0
    #: The HTTP read timeout of one call (for a long-running tool: of one job submission or poll).
    read_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.read_timeout_s <= 0:
            raise ConfigError("client.read_timeout_s must be more than 0 seconds", field="client.read_timeout_s")


@dataclass(frozen=True)
class StoreSettings:
    """Where a process finds the artifact store (profile block ``store:``).

    ``mode: local`` (the default): the blobs and the SQLite index under ``SPARKLE_HOME``
    are on this host. ``mode: http``: the tools read their inputs and write their outputs
    through production_agent's artifact face at ``url`` (``artifacts/http_store.py``),
    checksums checked at both ends; for a tool on a host that does not share the disk.
    ``max_upload_bytes``: the largest body ``POST /artifacts/upload`` accepts (413 beyond).
    """

    mode: str = "local"
    url: str | None = None          # None: production_agent's registry URL
    max_upload_bytes: int = 512 << 20

    def __post_init__(self) -> None:
        if self.mode not in ("local", "http"):
            raise ConfigError(f"store.mode must be 'local' or 'http' (got {self.mode!r})", field="store.mode")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"store.url must be an http(s) URL (got {self.url!r:.80})", field="store.url")
        if isinstance(self.max_upload_bytes, bool) or not isinstance(self.max_upload_bytes, int) \
                or not 1 <= self.max_upload_bytes <= 1 << 40:
            raise ConfigError("store.max_upload_bytes must be an integer from 1 to 2**40",
                              field="store.max_upload_bytes")


@dataclass(frozen=True)
class Settings:
    home: Path
    profile_name: str
    profile_path: Path
    host: str
    token: str | None
    tools: dict[str, ToolEntry]
    profile: dict[str, ToolProfile]
    render: dict[str, Any]
    sweep: SweepSettings = field(default_factory=SweepSettings)
    client: ClientPolicy = field(default_factory=ClientPolicy)
    #: production_agent resumes, when it starts, the runs its crashed predecessor left interrupted.
    auto_resume: bool = True
    store: StoreSettings = field(default_factory=StoreSettings)
    #: Films production_agent runs at once; later ones wait as ``queued`` (agents/film_queue.py).
    max_concurrent_runs: int = 1
    #: ``local`` (one supervised process per service) or ``ray`` (tools as Ray Serve deployments).
    engine: str = "local"
    ray: RaySettings = field(default_factory=RaySettings)

    def tool(self, tool_id: str) -> ToolEntry:
        try:
            return self.tools[tool_id]
        except KeyError:
            raise ConfigError(f"unknown tool {tool_id!r}; known: {', '.join(sorted(self.tools))}",
                              field="tool_id") from None

    def tool_profile(self, tool_id: str) -> ToolProfile:
        self.tool(tool_id)
        try:
            return self.profile[tool_id]
        except KeyError:
            raise ConfigError(f"profile {self.profile_name!r} does not configure tool {tool_id!r}",
                              context={"profile": str(self.profile_path)}) from None

    def url_for(self, tool_id: str) -> str:
        entry = self.tool(tool_id)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        if self.engine == "ray" and not entry.is_agent:
            # Serve's proxy, one route prefix per tool (ray_engine.py); callers do not change.
            return f"http://127.0.0.1:{self.ray.http_port}/{tool_id}"
        return f"http://{host}:{entry.port}"

    @property
    def db_path(self) -> Path:
        return self.home / "sparkle.db"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data


def _resolve_profile_path(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"SPARKLE_PROFILE file not found: {path}", field="SPARKLE_PROFILE")
        return path.resolve()
    profiles = project_path("configs/profiles")
    path = profiles / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profiles.glob("*.yaml"))
        raise ConfigError(f"unknown profile {name!r}; known profiles: {', '.join(known)}",
                          field="SPARKLE_PROFILE")
    return path


def _parse_registry(data: Mapping[str, Any]) -> tuple[str, dict[str, ToolEntry]]:
    host = str(data.get("host", "127.0.0.1"))
    tools: dict[str, ToolEntry] = {}
    for tool_id, raw in (data.get("tools") or {}).items():
        if not isinstance(raw, dict) or "port" not in raw or "module" not in raw:
            raise ConfigError(f"tool_registry: tools.{tool_id} needs port and module")
        tools[tool_id] = ToolEntry(
            tool_id=tool_id,
            port=int(raw["port"]),
            module=str(raw["module"]),
            backends=tuple(raw.get("backends") or ()),
            python=raw.get("python"),
        )
    return host, tools


def load_settings(env: Mapping[str, str] | None = None, *, profile: str | None = None) -> Settings:
    """Build Settings from the registry, the chosen profile and the env overrides."""
    env = os.environ if env is None else env
    host, tools = _parse_registry(_read_yaml(project_path("configs/tool_registry.yaml")))
    profile_name = profile or env.get("SPARKLE_PROFILE") or DEFAULT_PROFILE
    profile_path = _resolve_profile_path(profile_name)
    raw_profile = _read_yaml(profile_path)
    per_tool: dict[str, ToolProfile] = {}
    for tool_id, raw in (raw_profile.get("tools") or {}).items():
        if tool_id not in tools:
            raise ConfigError(f"profile {profile_path.name}: unknown tool {tool_id!r}", field=f"tools.{tool_id}")
        raw = raw or {}
        backend = env.get(f"SPARKLE_{tool_id.upper()}_BACKEND") or raw.get("backend")
        if not backend:
            raise ConfigError(f"profile {profile_path.name}: tools.{tool_id}.backend is required")
        allowed = tools[tool_id].backends
        if allowed and backend not in allowed:
            raise ConfigError(
                f"tool {tool_id!r} has no backend {backend!r}; allowed: {', '.join(allowed)}",
                field=f"SPARKLE_{tool_id.upper()}_BACKEND",
            )
        # The profile's concurrency is for the profile's backend; an env override of the backend keeps the spec's.
        concurrency = raw.get("max_concurrency") if backend == raw.get("backend") else None
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or not 1 <= concurrency <= 64):
            raise ConfigError(f"profile {profile_path.name}: tools.{tool_id}.max_concurrency must be an integer "
                              f"1-64 (got {concurrency!r})", field=f"tools.{tool_id}.max_concurrency")
        ray_tool, max_fan_out = parse_tool_ray(raw, f"tools.{tool_id}")
        per_tool[tool_id] = ToolProfile(backend=backend, model=str(raw.get("model", backend)),
                                        options=dict(raw.get("options") or {}), max_concurrency=concurrency,
                                        ray=ray_tool, max_fan_out=max_fan_out,
                                        **_job_settings(raw, f"{profile_path.name}: tools.{tool_id}"))
        # A profile may move a tool to another port (tests run several meshes side by side)
        # or to another interpreter (a tool whose ML stack conflicts with the rest).
        if raw.get("python") or raw.get("port"):
            entry = tools[tool_id]
            tools[tool_id] = ToolEntry(entry.tool_id, int(raw.get("port") or entry.port), entry.module,
                                       entry.backends, raw.get("python") or entry.python)
    home = Path(env.get("SPARKLE_HOME") or ".sparkle").expanduser().resolve()
    auto_resume = raw_profile.get("auto_resume", True)
    if not isinstance(auto_resume, bool):
        raise ConfigError(f"profile {profile_path.name}: auto_resume must be true or false", field="auto_resume")
    engine, ray = parse_engine(raw_profile, env)
    return Settings(
        home=home,
        profile_name=str(raw_profile.get("name") or profile_path.stem),
        profile_path=profile_path,
        host=host,
        token=env.get("SPARKLE_TOKEN") or None,
        tools=tools,
        profile=per_tool,
        render=dict(raw_profile.get("render") or {}),
        sweep=_seconds_section(SweepSettings, "sweep", raw_profile.get("sweep"), profile_path, lowest=1.0, highest=1e9),
        client=_seconds_section(ClientPolicy, "client", raw_profile.get("client"), profile_path, lowest=0.0,
                                highest=86_400.0),
        auto_resume=auto_resume,
        store=_store_settings(raw_profile.get("store"), profile_path),
        max_concurrent_runs=_max_concurrent_runs(raw_profile.get("max_concurrent_runs", 1), profile_path),
        engine=engine,
        ray=ray,
    )


def _store_settings(raw: Any, profile_path: Path) -> StoreSettings:
    if raw is None:
        return StoreSettings()
    known = {f.name for f in fields(StoreSettings)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise ConfigError(f"profile {profile_path.name}: store must be a mapping of {', '.join(sorted(known))}",
                          field="store")
    return StoreSettings(**raw)


def _max_concurrent_runs(value: Any, profile_path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ConfigError(f"profile {profile_path.name}: max_concurrent_runs must be an integer 1-64 "
                          f"(got {value!r})", field="max_concurrent_runs")
    return value


def _job_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A tool entry's ``long_running``, ``max_job_s`` and ``test_step_delay_s``, checked."""
    long_running = raw.get("long_running", False)
    if not isinstance(long_running, bool):
        raise ConfigError(f"{where}.long_running must be true or false", field="long_running")
    max_job_s = raw.get("max_job_s")
    delay = raw.get("test_step_delay_s", 0.0)
    for name, value, lowest in (("max_job_s", max_job_s, 1.0), ("test_step_delay_s", delay, 0.0)):
        if value is None and name == "max_job_s":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= 7 * 86_400:
            raise ConfigError(f"{where}.{name} must be seconds in [{lowest:g}, {7 * 86_400}]", field=name)
    return {"long_running": long_running, "max_job_s": None if max_job_s is None else float(max_job_s),
            "test_step_delay_s": float(delay)}


SecondsSectionT = TypeVar("SecondsSectionT", SweepSettings, ClientPolicy)


def _seconds_section(cls: type[SecondsSectionT], name: str, raw: Any, profile_path: Path, *,
                     lowest: float, highest: float) -> SecondsSectionT:
    """A profile block whose every key is a number of seconds (``sweep:``, ``client:``), checked field by field."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {profile_path.name}: {name} must be a mapping", field=name)
    known = {f.name for f in fields(cls)}
    values: dict[str, float] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"profile {profile_path.name}: unknown {name} setting {key!r} "
                              f"(known: {', '.join(sorted(known))})", field=f"{name}.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
            raise ConfigError(f"profile {profile_path.name}: {name}.{key} must be seconds in [{lowest:g}, {highest:g}]",
                              field=f"{name}.{key}")
        values[key] = float(value)
    return cls(**values)


@lru_cache(maxsize=1)
def _cached_settings(key: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(dict(key))


def get_settings() -> Settings:
    """Settings for the current process environment (cached per env snapshot)."""
    relevant = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SPARKLE_")))
    return _cached_settings(relevant)

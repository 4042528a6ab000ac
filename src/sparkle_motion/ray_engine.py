"""The ray engine: every FunctionTool's own ``create_app(SPEC)`` as a Ray Serve deployment.

``engine: ray`` in the profile (or ``sparkle-motion up --engine ray``) makes the mesh
supervisor (``mesh.py``) the Ray driver: it starts a local Ray instance (``ray.num_cpus``,
a small object store, no dashboard) or joins the cluster at ``ray.address``, starts Serve's
HTTP proxy on 127.0.0.1:``ray.http_port`` and deploys one Serve application per tool under
the route prefix ``/<tool_id>`` (``Settings.url_for`` returns that route, so callers do not
change). The app is the tool's, unchanged: :class:`ToolReplica` builds it in the replica
with ``create_app(SPEC)``, after recording which replica it is (``services/replica.py``: the
replica count in ``/metadata`` ``limits.replicas``, and staging files scoped per replica).

Replicas and their resources come from each tool's ``ray:`` entry (``engine_config.py``).
Serve restarts a replica that dies; a call in flight on it fails at the proxy and the
``ToolClient`` redoes it (``services/client.py``). The agents (script_agent, production_agent)
stay processes the supervisor spawns and restarts as on the local engine: production_agent
owns SQLite, the store and the runs' threads on the head node, and a single instance is
what the run registry's ownership model (one owner process per running run) expects.

Why Ray Serve and not more supervised processes: proposals/ray-serve.md.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sparkle_motion.config import Settings, ToolEntry
from sparkle_motion.logs import get_logger
from sparkle_motion.services import replica
from sparkle_motion.services.spec import import_string

import ray
from ray import serve

log = get_logger("sparkle_motion.ray_engine")

#: The Serve deployment (and application) of tool ``t`` is named ``t``; its replicas' actors
#: are named ``SERVE_REPLICA::<t>#<t>#<suffix>`` in the ``serve`` namespace.
SERVE_NAMESPACE = "serve"
#: Env that keeps a local Ray instance small on a laptop or a 2-core VM.
LEAN_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1", "RAY_SERVE_ENABLE_TASK_EVENTS": "0"}
#: Process env the replicas need (on a joined cluster they do not inherit the supervisor's).
_FORWARDED_ENV = ("SPARKLE_HOME", "SPARKLE_PROFILE", "SPARKLE_TOKEN", "SPARKLE_ENGINE", "SPARKLE_RAY_ADDRESS",
                  "PYTHONPATH")


@serve.ingress()
class ToolReplica:
    """One replica of a tool: the tool's own FastAPI app, built in the replica's process."""

    def __init__(self, tool_id: str, module: str, replicas: int) -> None:
        context = serve.get_replica_context()
        replica.set_current(replica.ReplicaInfo(replica_id=context.replica_id.unique_id, replicas=replicas,
                                                pid=os.getpid()))
        self.tool_id = tool_id
        self.module = module

    def __serve_build_asgi_app__(self) -> Any:
        from sparkle_motion.services.app import create_app

        return create_app(import_string(f"{self.module}:SPEC", what=f"tool {self.tool_id!r}"))


def served_tools(settings: Settings) -> list[ToolEntry]:
    """The registry entries Serve runs: every FunctionTool (the agents stay supervised processes)."""
    return [entry for entry in settings.tools.values() if not entry.is_agent]


def _deployment(settings: Settings, entry: ToolEntry) -> Any:
    profile = settings.tool_profile(entry.tool_id)
    spec_concurrency = profile.max_concurrency or import_string(f"{entry.module}:SPEC").max_concurrency
    runtime_env: dict[str, Any] = {"env_vars": {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}}
    if entry.python:
        runtime_env["py_executable"] = entry.python  # that interpreter needs ray[serve] of the same version
    options: dict[str, Any] = {
        "name": entry.tool_id,
        "ray_actor_options": {"num_cpus": profile.ray.num_cpus, "num_gpus": profile.ray.num_gpus,
                              "runtime_env": runtime_env},
        # Serve routes a call only to a replica with a free slot and queues the rest at the proxy;
        # one more would let a burst of fanned-out calls land two on one replica (the second then
        # answers 503 busy and waits a retry while a sibling idles). /ready and /metadata queue too,
        # so mesh status reads readiness from serve.status() (mesh.json), not from /ready.
        "max_ongoing_requests": spec_concurrency,
        "graceful_shutdown_timeout_s": 10.0,
    }
    if profile.ray.max_replicas is not None:
        options["autoscaling_config"] = {"min_replicas": profile.ray.min_replicas,
                                         "max_replicas": profile.ray.max_replicas,
                                         "target_ongoing_requests": spec_concurrency}
    else:
        options["num_replicas"] = profile.ray.num_replicas
    return serve.deployment(ToolReplica, **options).bind(entry.tool_id, entry.module, profile.ray.most_replicas)


class RayServeMesh:
    """The supervisor's Ray side: start or join Ray, deploy the tools, report them, take them down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_local = False
        self.startup_s: float | None = None
        self.gcs_address: str | None = None

    def start(self) -> None:
        """Start or join Ray, start Serve, deploy every tool (not waiting for their replicas)."""
        self.connect()
        self.deploy(served_tools(self.settings))
        log.info("ray_serve_started", gcs_address=self.gcs_address, local=self.started_local,
                 startup_s=round(self.startup_s or 0.0, 3), http_port=self.settings.ray.http_port)

    def connect(self) -> None:
        """Start a local Ray instance (or join ``ray.address``) and Serve's proxy; ``startup_s`` times it."""
        started = time.perf_counter()
        for key, value in LEAN_RAY_ENV.items():
            os.environ.setdefault(key, value)
        ray_settings = self.settings.ray
        if ray_settings.address:
            ray.init(address=ray_settings.address, namespace="sparkle", log_to_driver=False)
        else:
            ray.init(num_cpus=ray_settings.num_cpus, object_store_memory=ray_settings.object_store_mb << 20,
                     include_dashboard=False, namespace="sparkle", log_to_driver=False)
            self.started_local = True
        self.gcs_address = ray.get_runtime_context().gcs_address
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": ray_settings.http_port})
        self.startup_s = time.perf_counter() - started

    def deploy(self, entries: list[ToolEntry], *, wait: bool = False) -> None:
        """Deploy (or redeploy with new settings: Serve scales in place) these tools' applications."""
        serve.run_many([serve.RunTarget(_deployment(self.settings, entry), name=entry.tool_id,
                                        route_prefix=f"/{entry.tool_id}") for entry in entries],
                       wait_for_applications_running=wait)

    def states(self) -> dict[str, dict[str, Any]]:
        """Per tool: ``state`` (starting | ready | restarting | gave_up) and replica counts, from serve.status()."""
        applications = serve.status().applications
        out: dict[str, dict[str, Any]] = {}
        for entry in served_tools(self.settings):
            app = applications.get(entry.tool_id)
            deployment = app.deployments.get(entry.tool_id) if app is not None else None
            counts = {str(getattr(k, "value", k)): n for k, n in (deployment.replica_states if deployment else {}).items()}
            status = str(getattr(app.status, "value", app.status)) if app is not None else "NOT_STARTED"
            state = {"RUNNING": "ready", "DEPLOY_FAILED": "gave_up", "UNHEALTHY": "restarting"}.get(status, "starting")
            out[entry.tool_id] = {"state": state, "serve_status": status, "replicas": counts.get("RUNNING", 0),
                                  "replica_states": counts}
        return out

    def stop(self) -> None:
        """Delete our applications; a local instance we started goes down with them."""
        try:
            if self.started_local:
                serve.shutdown()
            else:
                for entry in served_tools(self.settings):
                    serve.delete(entry.tool_id)
        finally:
            ray.shutdown()
        log.info("ray_serve_stopped", local=self.started_local)

"""Serving a mesh service: ``serve(tool_id)`` and ``python -m sparkle_motion.services``."""

from __future__ import annotations

import argparse
import importlib
import inspect
import ipaddress
import os
import sys
from types import ModuleType
from typing import Any

from fastapi import FastAPI

from sparkle_motion.config import LOOPBACK_HOSTS, Settings, get_settings, token_problem
from sparkle_motion.errors import ConfigError, SparkleError
from sparkle_motion.logs import configure_logging, get_logger, tool_id_var
from sparkle_motion.services.app import create_app
from sparkle_motion.services.readiness import Readiness
from sparkle_motion.services.spec import ToolSpec

LISTENING_EVENT = "service.listening"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve anywhere


def check_bind_allowed(host: str, settings: Settings) -> None:
    """Refuse to expose a service beyond this machine without a bearer token."""
    if is_loopback(host):
        return
    if not settings.token:
        raise ConfigError(
            f"refusing to bind {host!r} without SPARKLE_TOKEN: a non-loopback address exposes the service "
            "to the network; set SPARKLE_TOKEN (clients send it as 'Authorization: Bearer') or bind 127.0.0.1",
            field="host",
        )
    problem = token_problem(settings.token)
    if problem is not None:
        raise ConfigError(f"refusing to bind {host!r}: SPARKLE_TOKEN {problem}", field="SPARKLE_TOKEN")


def _import_target(tool_id_or_module: str, settings: Settings) -> tuple[str, ModuleType, int | None]:
    """(service id, module, registry port) for a registry tool id or a dotted module path."""
    if tool_id_or_module in settings.tools:
        entry = settings.tools[tool_id_or_module]
        module_name, port = entry.module, entry.port
    elif "." in tool_id_or_module:
        # A module outside the registry (the framework's test-only echo tool):
        # it has no registry port, so the caller must pass one.
        module_name, port = tool_id_or_module, None
    else:
        raise ConfigError(f"unknown tool {tool_id_or_module!r}; known: {', '.join(sorted(settings.tools))} "
                          "(or pass a module path such as function_tools.echo.service)", field="tool_id")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import service module {module_name!r}: {exc}", field="tool_id",
                          context={"exception_type": type(exc).__name__}) from exc
    return tool_id_or_module, module, port


def build_app(module: ModuleType, settings: Settings) -> FastAPI:
    """The app a service module offers: ``SPEC`` (FunctionTools), ``create_app()`` or ``APP`` (agents)."""
    spec = getattr(module, "SPEC", None)
    if isinstance(spec, ToolSpec):
        return create_app(spec, settings)
    factory = getattr(module, "create_app", None)
    if callable(factory):
        params = inspect.signature(factory).parameters
        app = factory(settings=settings) if "settings" in params else factory()
    else:
        app = getattr(module, "APP", None)
    if not isinstance(app, FastAPI):
        raise ConfigError(f"service module {module.__name__!r} exposes neither SPEC (a ToolSpec), "
                          "create_app() returning a FastAPI app, nor APP", field="tool_id")
    return app


def serve(tool_id_or_module: str, host: str | None = None, port: int | None = None,
          settings: Settings | None = None) -> None:
    """Run one mesh service with uvicorn until SIGINT/SIGTERM.

    Host and port default to the registry's; binding a non-loopback host
    without ``SPARKLE_TOKEN`` is refused before anything is imported.
    """
    import uvicorn

    settings = settings or get_settings()
    configure_logging()
    host = host or settings.host
    check_bind_allowed(host, settings)
    service_id, module, registry_port = _import_target(tool_id_or_module, settings)
    port = port if port is not None else registry_port
    if port is None:
        raise ConfigError(f"{tool_id_or_module!r} is not in the tool registry, so --port is required", field="port")
    app = build_app(module, settings)
    readiness = getattr(app.state, "readiness", None)
    tool_id_var.set(getattr(app.state, "service_id", service_id))
    log = get_logger("sparkle_motion.services.serve")

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # /ready turns 503 the moment shutdown is requested, before in-flight requests drain.
            if isinstance(readiness, Readiness):
                readiness.mark_stopping()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                # The socket is bound now; running_tool() waits for this line so it
                # never mistakes another process on a reused port for this one.
                log.info(LISTENING_EVENT, host=host, port=port, pid=os.getpid())

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            server_header=False, timeout_graceful_shutdown=30)
    log.info("service.start", module=module.__name__, host=host, port=port, auth=bool(settings.token))
    _Server(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkle_motion.services",
                                     description="Serve one Sparkle Motion mesh service.")
    parser.add_argument("tool", help="tool id from configs/tool_registry.yaml, or a service module path")
    parser.add_argument("--host", default=None, help="bind address (default: registry host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the registry port)")
    args = parser.parse_args(argv)
    try:
        serve(args.tool, host=args.host, port=args.port)
    except SparkleError as exc:
        configure_logging()
        get_logger("sparkle_motion.services.serve").error("service.start_failed", code=exc.code,
                                                          message=str(exc), context=exc.context)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

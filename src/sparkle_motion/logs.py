"""Structured logging: one JSON object per line on stderr.

Every line carries ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``event``,
``request_id`` and ``tool_id`` (``null`` outside a request / a tool process),
followed by the event's own fields at top level::

    log = get_logger("function_tools.echo")
    log.info("invoke.done", duration_ms=12.5, artifacts=1)
    {"ts": "...", "level": "info", "logger": "function_tools.echo", "event": "invoke.done",
     "request_id": "req_...", "tool_id": "echo", "duration_ms": 12.5, "artifacts": 1}

``request_id`` and ``tool_id`` come from context variables that the service
framework sets per request, so code deep inside a backend needs no plumbing to
produce correlated lines.  Records from third-party libraries that use the
stdlib ``logging`` module (uvicorn, httpx) go through the same formatter once
:func:`configure_logging` has run, so a tool process writes nothing but JSON lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import stat
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("sparkle_request_id", default=None)
tool_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("sparkle_tool_id", default=None)

# Keys owned by the line format; an event field with one of these names is
# prefixed with "field_" instead of silently overwriting the envelope.
RESERVED_KEYS = frozenset({"ts", "level", "logger", "event", "request_id", "tool_id"})

_FIELDS_ATTR = "sparkle_fields"
_HANDLER_MARK = "_sparkle_json_handler"


def _jsonable(value: Any) -> Any:
    """Best-effort conversion so that logging never fails on an odd field value."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


class JsonLineFormatter(logging.Formatter):
    """Formats any LogRecord as one JSON line in the Sparkle Motion layout."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, None) or {}
        event = record.getMessage()
        bound_request = fields.get("request_id") if "request_id" in fields else request_id_var.get()
        bound_tool = fields.get("tool_id") if "tool_id" in fields else tool_id_var.get()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
            "request_id": bound_request,
            "tool_id": bound_tool,
        }
        for key, value in fields.items():
            if key in ("request_id", "tool_id"):
                continue
            line[f"field_{key}" if key in RESERVED_KEYS else key] = _jsonable(value)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            line["exc_type"] = exc_type.__name__
            line["exc_message"] = str(exc)
            line["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))
        return json.dumps(line, ensure_ascii=False, default=str)


class SparkleLogger:
    """A thin wrapper over a stdlib logger: ``log.info("event", key=value)``.

    ``bind(**fields)`` returns a logger that adds ``fields`` to every line;
    binding ``request_id`` / ``tool_id`` overrides the context variables.
    """

    __slots__ = ("_logger", "_bound")

    def __init__(self, logger: logging.Logger, bound: Mapping[str, Any] | None = None) -> None:
        self._logger = logger
        self._bound = dict(bound or {})

    @property
    def name(self) -> str:
        return self._logger.name

    def bind(self, **fields: Any) -> SparkleLogger:
        return SparkleLogger(self._logger, {**self._bound, **fields})

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: Any = None) -> None:
        if not self._logger.isEnabledFor(level):
            return
        merged = {**self._bound, **fields}
        # stacklevel=3 attributes the record to the caller of info()/error(), not to this wrapper.
        self._logger.log(level, event, exc_info=exc_info, extra={_FIELDS_ATTR: merged}, stacklevel=3)

    def debug(self, event: str, /, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        """Log at ERROR with the current exception's type, message and traceback."""
        self._log(logging.ERROR, event, fields, exc_info=True)


class WholeLineHandler(logging.Handler):
    """Writes each record as one JSON line, whole or not at all.

    A buffered text stream hands a long line (a traceback) to the OS in pieces;
    on a full disk the first piece lands and the rest fails, leaving half a JSON
    object in the log.  Here the encoded line goes out in one ``os.write`` on the
    stream's file descriptor; if the OS takes only part of it (ENOSPC), the part
    is cut off again (``ftruncate``) so the file ends on a line boundary.  A
    stream without a descriptor (a test's StringIO) gets one ``write`` call.
    A line that cannot be written is counted in ``dropped``, never retried.
    """

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self.dropped = 0

    def _fd(self) -> int | None:
        try:
            return self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        fd = self._fd()
        if fd is None:
            self.stream.write(line)
            self.stream.flush()
            return
        self.stream.flush()  # whatever others printed through the text layer goes first
        write_whole_line(fd, line.encode("utf-8"), self)


def write_whole_line(fd: int, data: bytes, counter: WholeLineHandler | None = None) -> bool:
    """One ``os.write`` of ``data``; a short write on a regular file is truncated away. True if written."""
    try:
        written = os.write(fd, data)
    except OSError:
        written = 0
    if written == len(data):
        return True
    if written:
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                os.ftruncate(fd, max(info.st_size - written, 0))
        except OSError:
            pass  # the line stays cut; nothing else can be done without space
    if counter is not None:
        counter.dropped += 1
    return False


def get_logger(name: str, **bound: Any) -> SparkleLogger:
    return SparkleLogger(logging.getLogger(name), bound)


def configure_logging(level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Route every stdlib log record to ``stream`` (default stderr) as JSON lines.

    Idempotent: calling it again replaces the handler it installed earlier and
    leaves handlers installed by others (e.g. pytest's capture) alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = WholeLineHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    # A thread that dies of an exception would print its traceback through the
    # text layer (cut on a full disk, and not JSON); route it through the handler.
    threading.excepthook = _log_uncaught_thread_exception
    # uvicorn installs its own handlers and formats only when given a log
    # config; we run it without one, so make its loggers propagate to ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    return handler


def _log_uncaught_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("sparkle_motion.threads").error(
        "thread.uncaught_exception", exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={_FIELDS_ATTR: {"thread": args.thread.name if args.thread is not None else None}})


@contextmanager
def log_context(*, request_id: str | None = None, tool_id: str | None = None) -> Iterator[None]:
    """Set ``request_id`` / ``tool_id`` for every line logged inside the block."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if tool_id is not None:
        tokens.append((tool_id_var, tool_id_var.set(tool_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)

"""JSON-lines logging: line layout, context variables, bound fields, exceptions."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sparkle_motion.logs import configure_logging, get_logger, log_context


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(logging.DEBUG, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_line_layout(log_stream: io.StringIO) -> None:
    get_logger("sparkle_motion.test").info("thing.done", count=3, ratio=0.5, names=["a", "b"])
    [line] = lines(log_stream)
    assert list(line)[:6] == ["ts", "level", "logger", "event", "request_id", "tool_id"]
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]
    assert (line["level"], line["logger"], line["event"]) == ("info", "sparkle_motion.test", "thing.done")
    assert line["request_id"] is None and line["tool_id"] is None
    assert (line["count"], line["ratio"], line["names"]) == (3, 0.5, ["a", "b"])


def test_context_and_bound_fields(log_stream: io.StringIO) -> None:
    log = get_logger("x", component="loader")
    with log_context(request_id="req_1", tool_id="echo"):
        log.warning("inside")
        log.bind(request_id="req_override").error("overridden")
    log.debug("outside")
    inside, overridden, outside = lines(log_stream)
    assert (inside["request_id"], inside["tool_id"], inside["component"]) == ("req_1", "echo", "loader")
    assert inside["level"] == "warning"
    assert overridden["request_id"] == "req_override" and overridden["tool_id"] == "echo"
    assert outside["request_id"] is None and outside["level"] == "debug"


def test_reserved_names_do_not_clobber_the_envelope(log_stream: io.StringIO) -> None:
    get_logger("x").info("evt", level="custom", event="other", ts=1)
    [line] = lines(log_stream)
    assert (line["level"], line["event"]) == ("info", "evt")
    assert (line["field_level"], line["field_event"], line["field_ts"]) == ("custom", "other", 1)


def test_odd_values_and_exceptions(log_stream: io.StringIO) -> None:
    log = get_logger("x")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log.exception("failed", path=__import__("pathlib").Path("/tmp/a"), err=exc, data={1: {2}})
    [line] = lines(log_stream)
    assert line["level"] == "error" and line["path"] == "/tmp/a"
    assert line["err"] == "ValueError: boom" and line["data"] == {"1": [2]}
    assert line["exc_type"] == "ValueError" and line["exc_message"] == "boom"
    assert "Traceback" in line["traceback"]


def test_third_party_records_become_json(log_stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    [line] = lines(log_stream)
    assert line["logger"] == "uvicorn.error" and line["event"] == "Started server process [42]"


def test_configure_is_idempotent(log_stream: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging(stream=other)
    get_logger("x").info("once")
    assert log_stream.getvalue() == ""
    assert len(lines(other)) == 1


def test_disabled_level_costs_nothing(log_stream: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    get_logger("x").info("hidden", big=object())
    assert log_stream.getvalue() == ""

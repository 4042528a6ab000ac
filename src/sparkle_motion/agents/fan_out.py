"""Running the independent items of a stage side by side, as many as the tool takes at once.

A tool reports its capacity in ``/metadata``: ``limits.max_concurrency`` (the
ToolSpec's, or the profile's ``max_concurrency`` for that tool) calls per process,
times ``limits.replicas`` processes behind its URL (Ray Serve replicas; 1 on the local
engine), capped by the profile's ``max_fan_out`` for that tool. A stage whose
items do not depend on each other (one clip per shot, one lip-sync per close-up)
runs them through a bounded thread pool of that size, and commits the results in
plan order, so a run's outputs are the same whatever order the items finished in.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from sparkle_motion.errors import SparkleError
from sparkle_motion.logs import get_logger
from sparkle_motion.services import ToolClient

log = get_logger("sparkle_motion.production")

MAX_FAN_OUT = 8  # threads one stage may use, whatever a tool reports
Item = TypeVar("Item")


def tool_capacity(client: ToolClient) -> int:
    """Replicas x ``max_concurrency`` from the tool's /metadata ``limits``, capped by the profile's
    ``max_fan_out`` and kept within 1..MAX_FAN_OUT (1 when it cannot say)."""
    try:
        limits = client.metadata().get("limits") or {}
        reported = int(limits.get("max_concurrency") or 1) * int(limits.get("replicas") or 1)
    except (SparkleError, TypeError, ValueError, AttributeError) as exc:
        log.warning("capacity_unknown", tool_id=client.tool_id, error=str(exc)[:200])
        reported = 1
    profile = client.settings.profile.get(client.tool_id) if client.settings is not None else None
    if profile is not None and profile.max_fan_out is not None:
        reported = min(reported, profile.max_fan_out)
    return max(1, min(MAX_FAN_OUT, reported))


def fan_out(items: list[Item], work: Callable[[Item], Any], capacity: Callable[[], int]) -> list[Any]:
    """``work`` over independent ``items``, at most ``capacity()`` at a time; results in item order.

    ``capacity`` is asked only when there is more than one item. Every item runs to
    its end even when another fails (its step is recorded either way); then the
    first failure in item order is raised.
    """
    workers = min(capacity(), len(items)) if len(items) > 1 else 1
    if workers <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fan-out") as pool:
        futures = [pool.submit(work, item) for item in items]
        wait(futures)
    return [future.result() for future in futures]

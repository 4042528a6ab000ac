"""Retention: which runs' artifacts to remove, by age or byte budget, and removing them.

One policy for every front end: ``sparkle-motion prune`` and the notebook's
``prune_runs`` both call :func:`prune_runs` here and print its report. A run is
judged by its newest artifact; the newest runs are kept first, so a byte budget
always removes the oldest runs. Nothing is deleted unless ``apply`` is true.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from sparkle_motion.artifacts.store import ArtifactStore, RunUsage
from sparkle_motion.artifacts.sweep import SweepReport, sweep_leftovers
from sparkle_motion.config import SweepSettings
from sparkle_motion.errors import InvalidInputError, SparkleError
from sparkle_motion.logs import get_logger

__all__ = ["PruneResult", "PrunedRun", "RetentionError", "check_limits", "prune_runs", "select_runs"]


class RetentionError(SparkleError):
    """Removing a run's artifacts failed; ``context`` names the run."""

    code = "retention_failed"
    http_status = 500


class PrunedRun(BaseModel):
    """A run the policy removes (or, in a dry run, would remove)."""

    run_id: str
    size_bytes: int
    age_days: float

    def line(self, applied: bool) -> str:
        return (f"{'deleted' if applied else 'would delete'} {self.run_id}: {self.size_bytes / 1e6:.1f} MB, "
                f"{self.age_days:.1f} days old")


class PruneResult(BaseModel):
    """What a prune removed (``applied``) or would remove (a dry run); ``str()`` is the printed report."""

    applied: bool
    runs: list[PrunedRun] = Field(default_factory=list)
    sweep: SweepReport | None = None  # crash leftovers removed (or found) alongside

    @property
    def freed_bytes(self) -> int:
        return sum(run.size_bytes for run in self.runs)

    def lines(self) -> list[str]:
        total = (f"{len(self.runs)} run(s), {self.freed_bytes / 1e6:.1f} MB "
                 f"{'freed' if self.applied else 'would be freed (dry run; --apply to delete)'}")
        swept = self.sweep.lines() if self.sweep is not None else []
        return [run.line(self.applied) for run in self.runs] + [total] + swept

    def __str__(self) -> str:
        return "\n".join(self.lines())


def check_limits(older_than_days: float | None, max_bytes: int | None) -> None:
    """InvalidInputError unless at least one limit is given and none is negative."""
    if older_than_days is None and max_bytes is None:
        raise InvalidInputError("give older_than_days and/or max_bytes", field="older_than_days")
    if older_than_days is not None and older_than_days < 0:
        raise InvalidInputError(f"must be >= 0 (got {older_than_days})", field="older_than_days")
    if max_bytes is not None and max_bytes < 0:
        raise InvalidInputError(f"must be >= 0 (got {max_bytes})", field="max_bytes")


def select_runs(usage: list[RunUsage], *, now: datetime, older_than_days: float | None = None,
                max_bytes: int | None = None) -> list[PrunedRun]:
    """The runs to remove, newest first: older than ``older_than_days``, or beyond ``max_bytes`` once the
    newer runs kept are counted."""
    doomed, kept_bytes = [], 0
    for run_id, size, newest in sorted(usage, key=lambda u: u[2], reverse=True):
        age_days = (now - datetime.fromisoformat(newest)).total_seconds() / 86400
        too_old = older_than_days is not None and age_days > older_than_days
        over_budget = max_bytes is not None and kept_bytes + size > max_bytes
        if too_old or over_budget:
            doomed.append(PrunedRun(run_id=run_id, size_bytes=size, age_days=age_days))
        else:
            kept_bytes += size
    return doomed


def prune_runs(store: ArtifactStore, *, older_than_days: float | None = None, max_bytes: int | None = None,
               apply: bool = False, sweep: SweepSettings | None = None) -> PruneResult:
    """Remove (``apply``) or list (a dry run) the runs the policy selects; RetentionError if a removal fails.

    With ``sweep`` (the profile's policy) crash leftovers are swept too (``artifacts/sweep.py``)
    and counted in the result.
    """
    check_limits(older_than_days, max_bytes)
    doomed = select_runs(store.runs_usage(), now=datetime.now(timezone.utc), older_than_days=older_than_days,
                         max_bytes=max_bytes)
    if apply:
        for done, run in enumerate(doomed):
            try:
                store.delete_run(run.run_id)
            except (OSError, SparkleError) as exc:
                raise RetentionError(f"cannot remove run {run.run_id}: {exc}", context={
                    "run_id": run.run_id, "deleted": [r.run_id for r in doomed[:done]]}) from exc
    swept = None
    if sweep is not None:
        swept = sweep_leftovers(store, sweep, apply=apply, log=get_logger("sparkle_motion.retention"))
    return PruneResult(applied=apply, runs=doomed, sweep=swept)

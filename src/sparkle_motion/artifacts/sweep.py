"""The crash-leftover sweep: staging files of dead calls, unindexed blobs, artifacts no step names.

A crash leaves three kinds of litter, and only these are ever removed here:

* **staging files** (``<root>/staging``) older than the longest job: the call
  that made them is gone (a tool killed mid-call never ran its cleanup);
* **unindexed blobs / temp files** under ``<root>/artifacts`` (a put that died
  between its rename and its index row), via :meth:`ArtifactStore.sweep`;
* **unreferenced artifacts**: indexed artifacts of a *production run* (its id is
  in the ``runs`` table) that no step of any run names, nor any run's plan or
  an ADK artifact version, once older than a grace period (a tool put them, then
  production_agent died before recording the step).  Artifacts outside the
  runs table (ad-hoc tool calls, plans) are the retention policy's business.

Every service runs it at start (:func:`sweep_at_start`) and ``prune`` runs it;
both count and log what went.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from sparkle_motion.artifacts.store import ArtifactStore
from sparkle_motion.config import Settings, SweepSettings
from sparkle_motion.db import format_ts
from sparkle_motion.logs import SparkleLogger

__all__ = ["SweepReport", "sweep_at_start", "sweep_leftovers"]


class SweepReport(BaseModel):
    """What a sweep removed (``applied``) or would remove; paths are store-relative."""

    applied: bool
    staging: list[str] = Field(default_factory=list)
    unindexed: list[str] = Field(default_factory=list)
    unreferenced: list[str] = Field(default_factory=list)  # artifact URIs
    freed_bytes: int = 0

    @property
    def total(self) -> int:
        return len(self.staging) + len(self.unindexed) + len(self.unreferenced)

    def lines(self) -> list[str]:
        verb = "swept" if self.applied else "would sweep"
        return [f"{verb} {len(self.staging)} staging file(s), {len(self.unindexed)} unindexed blob(s), "
                f"{len(self.unreferenced)} unreferenced artifact(s): {self.freed_bytes / 1e6:.1f} MB"]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.lstat().st_size


#: Which staging names the starting service owns: a name prefix, or a test of the name (Serve replicas).
OwnStaging = str | Callable[[str], bool] | None


def _is_own(own: OwnStaging, name: str) -> bool:
    if own is None:
        return False
    return name.startswith(own) if isinstance(own, str) else own(name)


def _stale_staging(store: ArtifactStore, older_than_s: float, own_prefix: OwnStaging = None) -> list[Path]:
    directory = store.root / "staging"
    if not directory.is_dir():
        return []
    cutoff = time.time() - older_than_s
    stale = []
    for entry in directory.iterdir():
        try:
            if _is_own(own_prefix, entry.name) or entry.lstat().st_mtime < cutoff:
                stale.append(entry)
        except FileNotFoundError:
            continue  # its call finished and cleaned up meanwhile
    return stale


def _referenced_text(store: ArtifactStore) -> tuple[set[str], str]:
    """Artifact ids named by any step, and the text of everything else that may name one."""
    ids: set[str] = set()
    texts: list[str] = []
    with store.database.read() as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "steps" in tables:
            for artifact_ids, output in conn.execute("SELECT artifact_ids, output FROM steps"):
                ids.update(json.loads(artifact_ids or "[]"))
                if output:
                    texts.append(output)
        if "runs" in tables:
            for plan_uri, options in conn.execute("SELECT plan_uri, options FROM runs"):
                texts.extend(t for t in (plan_uri, options) if t)
        if "adk_artifact_versions" in tables:
            ids.update(row[0] for row in conn.execute(
                "SELECT artifact_id FROM adk_artifact_versions WHERE artifact_id IS NOT NULL"))
    return ids, "\n".join(texts)


def _unreferenced(store: ArtifactStore, older_than_s: float) -> list[tuple[str, str, int]]:
    """(artifact_id, uri, size) of production-run artifacts nothing names, older than ``older_than_s``."""
    cutoff = format_ts(datetime.now(timezone.utc) - timedelta(seconds=older_than_s))
    with store.database.read() as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
            return []
        rows = conn.execute(
            "SELECT a.artifact_id, a.run_id, a.stage, a.size_bytes FROM artifacts a"
            " JOIN runs r ON r.run_id = a.run_id WHERE a.created_at < ?", (cutoff,)).fetchall()
    if not rows:
        return []
    ids, text = _referenced_text(store)
    return [(row[0], f"artifact+fs://{row[1]}/{row[2]}/{row[0]}", int(row[3])) for row in rows
            if row[0] not in ids and row[0] not in text]


def sweep_leftovers(store: ArtifactStore, policy: SweepSettings, *, apply: bool = True,
                    log: SparkleLogger | None = None, own_prefix: OwnStaging = None) -> SweepReport:
    """Remove (``apply``) or list crash leftovers under ``store``; the report counts them.

    ``own_prefix``: staging names that only the starting service writes (``<tool_id>-``, see
    ``ToolContext.staging_path``). The supervisor runs one process per tool on a home, so at its
    start no call of that tool is alive and its staging files are leftovers whatever their age.
    A Serve replica shares the home with its siblings and passes a test instead, which keeps a
    live sibling's files (``services/replica.py``).
    """
    report = SweepReport(applied=apply)
    for path in _stale_staging(store, policy.longest_job_s, own_prefix):
        try:
            size = _size(path)
            if apply:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except FileNotFoundError:
            continue
        report.staging.append(store.relative(path))
        report.freed_bytes += size
    for path in store.sweep(policy.longest_job_s, apply=apply):
        report.unindexed.append(store.relative(path))
    doomed = _unreferenced(store, policy.unreferenced_grace_s)
    if apply and doomed:
        store.delete_artifacts([artifact_id for artifact_id, _uri, _size in doomed])
    report.unreferenced = [uri for _id, uri, _size in doomed]
    report.freed_bytes += sum(size for _id, _uri, size in doomed)
    if log is not None and report.total:
        log.info("sweep.done", applied=apply, staging=report.staging, unindexed=report.unindexed,
                 unreferenced=report.unreferenced, freed_bytes=report.freed_bytes)
    return report


def sweep_at_start(settings: Settings, log: SparkleLogger, store: ArtifactStore | None = None, *,
                   own_prefix: OwnStaging = None) -> SweepReport | None:
    """The sweep every service runs when it starts; a failure is logged, never fatal to the start."""
    own_store = store is None
    try:
        store = store or ArtifactStore(settings.home, db_path=settings.db_path)
        try:
            return sweep_leftovers(store, settings.sweep, log=log, own_prefix=own_prefix)
        finally:
            if own_store:
                store.close()
    except Exception:  # noqa: BLE001 - a service must still start; the cause is in the log line
        log.exception("sweep.failed", home=os.fspath(settings.home))
        return None

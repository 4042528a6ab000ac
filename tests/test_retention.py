"""The retention policy: which runs go by age and by byte budget, and a dry run deletes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from store_fixtures import put_old_and_new_run

from sparkle_motion.artifacts import ArtifactStore, RunUsage
from sparkle_motion.artifacts.retention import prune_runs, select_runs
from sparkle_motion.errors import InvalidInputError

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def usage(run_id: str, size: int, days_ago: float) -> RunUsage:
    return RunUsage(run_id, size, (NOW - timedelta(days=days_ago)).isoformat())


def test_age_and_budget_keep_the_newest_runs():
    runs = [usage("run_a", 100, 30), usage("run_b", 100, 10), usage("run_c", 100, 1)]
    assert [r.run_id for r in select_runs(runs, now=NOW, older_than_days=14)] == ["run_a"]
    assert [r.run_id for r in select_runs(runs, now=NOW, max_bytes=250)] == ["run_a"]
    assert [r.run_id for r in select_runs(runs, now=NOW, max_bytes=150, older_than_days=5)] == ["run_b", "run_a"]
    doomed = select_runs(runs, now=NOW, max_bytes=0)
    assert [(r.run_id, r.size_bytes, round(r.age_days)) for r in doomed] == [
        ("run_c", 100, 1), ("run_b", 100, 10), ("run_a", 100, 30)]


def test_dry_run_reports_and_apply_deletes(tmp_path):
    put_old_and_new_run(tmp_path)
    store = ArtifactStore(tmp_path)
    try:
        dry = prune_runs(store, max_bytes=1500)
        assert not dry.applied and [r.run_id for r in dry.runs] == ["run_old"] and dry.freed_bytes == 1000
        assert str(dry).splitlines()[-1] == "1 run(s), 0.0 MB would be freed (dry run; --apply to delete)"
        assert store.list("run_old")
        applied = prune_runs(store, max_bytes=1500, apply=True)
        assert applied.applied and str(applied).startswith("deleted run_old:")
        assert not store.list("run_old") and store.list("run_new")
        with pytest.raises(InvalidInputError) as info:
            prune_runs(store, max_bytes=-1)
        assert info.value.field == "max_bytes"
    finally:
        store.close()

"""Fuzz every mesh service with schema-generated and mutated bodies: never a 5xx, healthy after, store intact.

schemathesis generates the bodies from each service's own /openapi.json —
schema-valid ones and mutated (schema-invalid) ones, in its coverage and
fuzzing phases — and sends them to every POST operation.  At least
MIN_BODIES per service; the st_hooks status log counts what was really sent.
After each service's batch: /health and /ready answer 200, and every artifact
row in the store is present with its sha256 verified.

Valid bodies render for real on the cpu backends; for the tools that take
artifact URIs, generated URIs name nothing in the store, so those bodies are
answered 422 early (rendering is covered by each tool's own tests).
bench/bench_fuzz.py runs the bench-sized variant (2,000 per service).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from st_runner import SERVICES, fuzz_service

pytestmark = pytest.mark.slow

MIN_BODIES = 500


@pytest.mark.parametrize("name", list(SERVICES))
def test_fuzzed_bodies_never_answer_5xx(name: str, tmp_path: Path) -> None:
    result = fuzz_service(name, tmp_path, min_bodies=MIN_BODIES)
    print(result.summary())
    assert result.bodies >= MIN_BODIES, result.summary()
    assert not result.run.server_errors, (result.run.server_errors[:10], result.run.output[-4000:])
    assert result.run.returncode == 0, result.run.output[-6000:]
    assert result.health == 200 and result.ready == 200, result.summary()
    assert result.verified_artifacts == result.artifact_rows, result.summary()

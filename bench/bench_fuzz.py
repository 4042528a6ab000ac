"""Fuzz each of the 8 mesh services with 2,000 schema-generated and mutated bodies; print counts and req/s.

The bench-sized run of tests/faults/test_fuzz.py (500 per service in CI):
schemathesis bodies from each service's own /openapi.json, sent to a real
process on the cpu profile with a temp store.  Prints, per service, the POST
bodies sent, all requests, req/s, the status counts, the 5xx count (must be 0)
and the artifacts verified afterwards; exits 1 on any 5xx, unhealthy service or
bad checksum.  Usage: python bench/bench_fuzz.py [--bodies 2000] [service ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from st_runner import SERVICES, fuzz_service  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", default=list(SERVICES), choices=list(SERVICES))
    parser.add_argument("--bodies", type=int, default=2000, help="POST bodies per service (at least)")
    args = parser.parse_args()
    failed = False
    total_bodies = total_5xx = 0
    for name in args.services:
        with tempfile.TemporaryDirectory(prefix=f"bench-fuzz-{name}-") as work:
            result = fuzz_service(name, Path(work), min_bodies=args.bodies)
        print(result.summary(), flush=True)
        total_bodies += result.bodies
        total_5xx += len(result.run.server_errors)
        failed |= bool(result.run.server_errors) or result.health != 200 or result.ready != 200 \
            or result.verified_artifacts != result.artifact_rows
    print(f"total: {total_bodies} POST bodies over {len(args.services)} services, 5xx: {total_5xx}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

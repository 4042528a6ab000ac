"""Run schemathesis' ``st`` CLI against a real mesh service; shared by the contract and fuzz tests and bench/.

Why the CLI in a subprocess: it is exactly what the issue's acceptance runs
(`st run --checks all <service>/openapi.json`), it reads the repository's
``schemathesis.toml``, and its hooks (``st_hooks.py``) log every response's
status, so the caller counts requests and 5xx without trusting st's summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.testing import RunningTool, running_tool, write_test_profile

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: The mesh's 8 services (six tools, two agents) and the framework's echo test tool.
SERVICES = {
    "echo": "function_tools.echo.service",
    "images_sdxl": "images_sdxl",
    "videos_wan": "videos_wan",
    "tts_chatterbox": "tts_chatterbox",
    "lipsync_wav2lip": "lipsync_wav2lip",
    "assemble_ffmpeg": "assemble_ffmpeg",
    "qa_qwen2vl": "qa_qwen2vl",
    "script_agent": "script_agent",
    "production_agent": "production_agent",
}
CPU_ENV: dict[str, str | None] = {"SPARKLE_PROFILE": "cpu", "SPARKLE_TOKEN": None}
#: Per service, on top of CPU_ENV.  tts_chatterbox is fuzzed on espeak: its HTTP contract is the backends'
#: shared one, and kokoro (the cpu default) would spend ~0.3 CPU-s per second of speech on every valid body
#: of up to 5,000 characters — tens of minutes.  kokoro's hostile texts are in tests/test_tts_kokoro.py.
SERVICE_ENV: dict[str, dict[str, str | None]] = {"tts_chatterbox": {"SPARKLE_TTS_CHATTERBOX_BACKEND": "espeak"}}


@dataclass
class StRun:
    returncode: int
    output: str
    seconds: float
    responses: list[tuple[str, str, int]]  # (method, path, status) of every request st sent

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for _, _, status in self.responses)

    @property
    def server_errors(self) -> list[tuple[str, str, int]]:
        return [r for r in self.responses if r[2] >= 500]

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.responses if m == method)


@contextmanager
def running_service(name: str, home: Path) -> Iterator[RunningTool]:
    """One of SERVICES as a real process on the cpu profile, ``home`` as its store.

    production_agent gets script_agent beside it, as in a mesh: the studio's
    ``/studio/plan`` asks the planner, and without one every valid body would
    be a (correct) 503.
    """
    if name != "production_agent":
        env = {**CPU_ENV, **SERVICE_ENV.get(name, {})}
        with running_tool(SERVICES[name], home=home, env=env, ready_timeout=240) as tool:
            yield tool
        return
    profile = write_test_profile(home.with_name(f"{home.name}-profile"))
    ports = {tool_id: entry["port"] for tool_id, entry in yaml.safe_load(profile.read_text())["tools"].items()}
    env = {**CPU_ENV, "SPARKLE_PROFILE": str(profile)}
    with running_tool("script_agent", home=home, env=env, port=ports["script_agent"], ready_timeout=240), \
            running_tool(SERVICES[name], home=home, env=env, port=ports["production_agent"],
                         ready_timeout=240) as tool:
        yield tool


def st_run(base_url: str, log_dir: Path, *args: str, timeout: float = 900) -> StRun:
    """``st run <base_url>/openapi.json <args>``, from the repository root (so schemathesis.toml applies)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    status_log = log_dir / f"st-status-{time.monotonic_ns()}.log"
    pythonpath = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": pythonpath,
           "SPARKLE_ST_STATUS_LOG": str(status_log)}
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", f"{base_url}/openapi.json", "--workers", "1", "--request-timeout", "120",
           "--no-color", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    responses = []
    if status_log.exists():
        for line in status_log.read_text(encoding="utf-8").splitlines():
            method, path, status = line.rsplit(" ", 2)
            responses.append((method, path, int(status)))
    return StRun(proc.returncode, proc.stdout + proc.stderr, seconds, responses)


def verify_store(home: Path) -> int:
    """Re-hash every artifact row of the store under ``home``; IntegrityError on the first bad one."""
    store = ArtifactStore(home)
    try:
        verified = 0
        for usage in store.runs_usage():
            for manifest in store.list(usage.run_id):
                store.verify(manifest.artifact_id)
                verified += 1
        return verified
    finally:
        store.close()


@dataclass
class FuzzResult:
    name: str
    run: StRun
    bodies: int
    health: int
    ready: int
    artifact_rows: int
    verified_artifacts: int

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.run.statuses.items()))
        rate = len(self.run.responses) / self.run.seconds if self.run.seconds else 0.0
        return (f"{self.name}: {self.bodies} POST bodies, {len(self.run.responses)} requests in "
                f"{self.run.seconds:.1f} s ({rate:.1f} req/s); 5xx: {len(self.run.server_errors)}; statuses {{{statuses}}}; "
                f"artifacts verified {self.verified_artifacts}/{self.artifact_rows}; health {self.health}, ready {self.ready}")


def _artifact_rows(home: Path) -> int:
    store = ArtifactStore(home)
    try:
        return sum(len(store.list(usage.run_id)) for usage in store.runs_usage())
    finally:
        store.close()


def fuzz_service(name: str, work: Path, *, min_bodies: int, seed: int = 1) -> FuzzResult:
    """At least ``min_bodies`` generated and mutated bodies to every POST operation of one service.

    st's example budget is per operation and per phase, so it is raised round by
    round (same seed, fresh examples each round) until ``min_bodies`` were sent.
    """
    home = work / f"{name}-home"
    with running_service(name, home) as service:
        runs: list[StRun] = []
        examples = max(50, min_bodies // 3)
        while sum(r.count("POST") for r in runs) < min_bodies and len(runs) < 6:
            runs.append(st_run(service.url, work, "--checks", "not_a_server_error", "--include-method", "POST",
                               "--phases", "coverage,fuzzing", "--mode", "all",
                               "--max-examples", str(examples), "--seed", str(seed + len(runs))))
        health = service.client.get("/health").status_code
        ready = service.client.get("/ready").status_code
    merged = StRun(max(r.returncode for r in runs), "\n".join(r.output for r in runs),
                   sum(r.seconds for r in runs), [x for r in runs for x in r.responses])
    return FuzzResult(name, merged, merged.count("POST"), health, ready, _artifact_rows(home), verify_store(home))

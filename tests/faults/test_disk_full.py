"""A full disk under SPARKLE_HOME is said plainly (disk_full, 507), corrupts nothing, and a resume finishes.

The home is a size-limited tmpfs, mounted for the test; that needs root (CI and
the dev sandbox run as root).  Without root, or where ``mount`` is refused (an
unprivileged container), the tests skip and say why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.errors import DiskFullError
from sparkle_motion.logs import configure_logging, get_logger
from sparkle_motion.media import run_ffmpeg
from sparkle_motion.testing import running_mesh, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mesh")]

VOLUME_BYTES = 30 * 1024 * 1024
RESUME_VOLUME_BYTES = 256 * 1024 * 1024
FPS, WIDTH, HEIGHT = 12, 192, 112


def _mount_tmpfs(where: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A fresh 30 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; this run is not root")
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    try:
        _mount_tmpfs(mount_point, VOLUME_BYTES)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"mount -t tmpfs refused here ({exc}; {detail.decode(errors='replace').strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True, timeout=30)


def fill(volume: Path, leave_bytes: int) -> Path:
    """Write a filler file so that about ``leave_bytes`` stay free; deleting it frees the space again."""
    filler = volume / f"filler-{uuid.uuid4().hex[:6]}.bin"
    free = shutil.disk_usage(volume).free
    with open(filler, "wb") as out:
        remaining = max(free - leave_bytes, 0)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            remaining -= out.write(block[:min(len(block), remaining)])
    return filler


def test_ffmpeg_on_a_full_disk_is_disk_full_not_an_exit_code(small_volume: Path, monkeypatch):
    monkeypatch.setenv("SPARKLE_HOME", str(small_volume))
    filler = fill(small_volume, 64 * 1024)
    target = small_volume / "staging" / "out.mp4"
    target.parent.mkdir(exist_ok=True)
    with pytest.raises(DiskFullError) as caught:
        run_ffmpeg(["-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=24:duration=8",
                    "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(target)], timeout=120)
    error = caught.value
    assert error.http_status == 507 and error.code == "disk_full"
    assert error.context["path"] == "staging/out.mp4"
    assert isinstance(error.context["free_bytes"], int) and error.context["free_bytes"] < 1 << 20
    assert str(small_volume) not in error.message and "staging/out.mp4" in error.message
    assert "MB free" in error.message
    filler.unlink()


def test_store_put_on_a_full_disk_leaves_no_partial_file(small_volume: Path):
    store = ArtifactStore(small_volume / "home")
    try:
        kept = store.put("run_a", "stage", "blob", b"x" * 1000, "application/octet-stream")
        fill(small_volume, 256 * 1024)
        with pytest.raises(DiskFullError) as caught:
            store.put("run_a", "stage", "blob", os.urandom(2 << 20), "application/octet-stream")
        assert caught.value.context["path"].startswith("artifacts/run_a/stage/blob_")
        files = sorted(p.name for p in (small_volume / "home/artifacts/run_a/stage").iterdir())
        assert files == [Path(kept.local_path).name], "the failed put left a file behind"
        assert [m.artifact_id for m in store.list("run_a")] == [kept.artifact_id]
        store.verify(kept.uri)
    finally:
        store.close()


def test_log_lines_on_a_full_disk_are_whole_or_absent(small_volume: Path):
    log_path = small_volume / "tool.log"
    filler = fill(small_volume, 48 * 1024)
    stream = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - the handler writes through its fd
    handler = configure_logging(logging.INFO, stream=stream)
    try:
        log = get_logger("faults.disk_full")
        for index in range(400):  # ~1 KB each: far more than the space left
            log.info("fault.line", index=index, payload="é" * 300 + "x" * 400)
    finally:
        logging.getLogger().removeHandler(handler)
        stream.close()
    assert handler.dropped > 0, "the disk never filled up; the test proves nothing"
    lines = log_path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file does not end on a line boundary"
    indexes = [json.loads(line)["index"] for line in lines[:-1]]
    assert indexes == list(range(len(indexes))) and len(indexes) > 5
    filler.unlink()


def verify_all(home: Path, db_path: Path, run_id: str) -> int:
    """Re-hash every artifact of the run (IntegrityError on a corrupt one); returns how many."""
    store = ArtifactStore(home, db_path=db_path)
    try:
        manifests = store.list(run_id)
        for manifest in manifests:
            store.verify(manifest.uri)
        return len(manifests)
    finally:
        store.close()


def _plan_uri(settings) -> str:
    with httpx.Client(base_url=settings.url_for("script_agent"), timeout=120) as script:
        answer = script.post("/invoke", json={"prompt": "A lighthouse keeper befriends a storm", "shots": 4,
                                              "duration_s": 60, "seed": 3})
    assert answer.status_code == 200, answer.text
    return answer.json()["artifact_uri"]


def test_production_run_fails_with_disk_full_then_resumes_once_space_is_freed(small_volume: Path):
    home = small_volume / "home"
    with running_mesh(home, render={"fps": FPS, "width": WIDTH, "height": HEIGHT}) as settings:
        plan_uri = _plan_uri(settings)
        # ~1.5 MB left: the plan is stored, the first minute of audio and video is not.
        filler = fill(small_volume, 1536 * 1024)
        with httpx.Client(base_url=settings.url_for("production_agent"), timeout=60) as production:
            accepted = production.post("/invoke", json={"plan_uri": plan_uri, "mode": "run", "qa_mode": "skip"})
            assert accepted.status_code == 202, accepted.text
            run_id = accepted.json()["run_id"]
            failed = wait_for_status(production, run_id, {"succeeded", "failed"}, timeout=600)
            assert failed["status"] == "failed", "the run finished on a full disk"
            error, message = failed["error"], failed["error"]["message"]
            # Either production_agent's own write failed (code disk_full) or a tool's (its 507 disk_full).
            assert error["code"] == "disk_full" or "507 disk_full" in message, error
            assert message.startswith("disk full") or "disk full: cannot write" in message, error
            assert "MB free" in message and "resume" in message, error
            assert str(small_volume) not in json.dumps(failed["error"]), "the error shows an absolute path"

            # Nothing corrupt: every indexed artifact matches its checksum, and SQLite is intact.
            assert verify_all(home, settings.db_path, run_id) > 0
            with sqlite3.connect(settings.db_path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for log_file in (home / "logs").glob("*.log"):
                for number, line in enumerate(log_file.read_text(encoding="utf-8").splitlines(), start=1):
                    try:
                        json.loads(line)
                    except json.JSONDecodeError:
                        if line.lstrip().startswith("{"):
                            raise AssertionError(f"{log_file.name}:{number} is a cut JSON line: {line[-120:]}")

            # Free the space: the filler goes, and the volume grows (a 60 s film's assembly
            # stages ~25 MB of audio alone, more than the 30 MB the failure was staged on).
            filler.unlink()
            subprocess.run(["mount", "-o", f"remount,size={RESUME_VOLUME_BYTES}", str(small_volume)],
                           check=True, capture_output=True, timeout=30)
            resumed = production.post("/invoke", json={"run_id": run_id})
            assert resumed.status_code == 202, resumed.text
            done = wait_for_status(production, run_id, {"succeeded", "failed"}, timeout=900)
            assert done["status"] == "succeeded", done["error"]
            final = next(home.glob(f"artifacts/{run_id}/finalize/video_final_*.mp4"))
            with av.open(str(final)) as container:
                assert abs(container.duration / av.time_base - 60.0) < 1.0
            assert verify_all(home, settings.db_path, run_id) > 0

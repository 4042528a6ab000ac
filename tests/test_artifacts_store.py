"""ArtifactStore: round trips, atomicity under crashes, path safety, concurrent writers."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from sparkle_motion.artifacts import ArtifactStore, parse_uri
from sparkle_motion.artifacts.store import CHUNK_BYTES
from sparkle_motion.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    InvalidInputError,
    PathEscapeError,
    PayloadTooLargeError,
)

PROVENANCE = {"tool": "images_sdxl", "backend": "storyboard", "model": "sdxl-test", "seed": 7,
              "params": {"steps": 4, "guidance": 5.5}, "timings": {"invoke_s": 0.12}, "request_id": "req_1"}


def _index_rows(store: ArtifactStore) -> list[sqlite3.Row]:
    conn = sqlite3.connect(store.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM artifacts").fetchall()
    finally:
        conn.close()


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# --------------------------------------------------------------- round trips
def test_put_bytes_round_trip_with_checksum_media_and_provenance(store: ArtifactStore) -> None:
    payload = os.urandom(3000)
    m = store.put("run_1", "images_sdxl", "keyframe", payload, "image/png", PROVENANCE,
                  media={"width": 64, "height": 48})
    assert m.sha256 == hashlib.sha256(payload).hexdigest()
    assert m.size_bytes == 3000
    assert m.uri == f"artifact+fs://run_1/images_sdxl/{m.artifact_id}"
    assert Path(m.local_path) == store.root / "artifacts" / "run_1" / "images_sdxl" / f"{m.artifact_id}.png"
    assert Path(m.local_path).read_bytes() == payload
    assert (m.width, m.height, m.fps, m.duration_s, m.sample_rate) == (64, 48, None, None, None)
    assert m.metadata == PROVENANCE
    assert m.created_at.endswith("Z")
    assert store.get(m.uri) == m
    assert store.get(m.artifact_id) == m
    with store.open(m.uri) as handle:
        assert handle.read() == payload
    assert store.path_for(m.artifact_id) == Path(m.local_path)
    assert store.verify(m.uri) == m
    assert parse_uri(m.uri) == ("run_1", "images_sdxl", m.artifact_id)


def test_put_from_path_and_stream_and_persistence(sparkle_home: Path, tmp_path: Path) -> None:
    source = tmp_path / "clip.bin"
    source.write_bytes(b"\x00\x01" * 5000)
    store = ArtifactStore(sparkle_home)
    from_path = store.put("run_2", "videos", "clip", source, "video/mp4",
                          media={"duration_s": 2.5, "fps": 24, "width": 32, "height": 32})
    from_stream = store.put("run_2", "tts", "line", io.BytesIO(b"RIFF-data"), "audio/wav",
                            media={"duration_s": 0.5, "sample_rate": 16000})
    assert source.exists(), "a copy must leave the source alone"
    assert from_path.local_path.endswith(".mp4") and from_stream.local_path.endswith(".wav")
    assert from_path.fps == 24.0 and isinstance(from_path.width, int)
    assert from_stream.sample_rate == 16000
    store.close()
    reopened = ArtifactStore(sparkle_home)
    assert reopened.get(from_path.uri) == from_path
    assert reopened.list("run_2") == [from_path, from_stream]
    assert [m.artifact_id for m in reopened.list("run_2", stage="tts")] == [from_stream.artifact_id]
    assert reopened.list("run_2", artifact_type="clip") == [from_path]
    assert reopened.list("run_none") == []


def test_list_is_ordered_by_created_at_then_id(store: ArtifactStore) -> None:
    made = [store.put("run_o", "s", "t", bytes([i]), "application/octet-stream") for i in range(6)]
    listed = store.list("run_o")
    assert listed == sorted(made, key=lambda m: (m.created_at, m.artifact_id))
    assert len({m.artifact_id for m in listed}) == 6


@pytest.mark.parametrize("media_type,ext", [
    ("image/png", ".png"), ("image/jpeg", ".jpg"), ("video/mp4", ".mp4"), ("audio/wav", ".wav"),
    ("application/json", ".json"), ("text/plain", ".txt"), ("text/plain; charset=utf-8", ".txt"),
    ("application/x-subrip", ".srt"), ("Image/PNG", ".png"), ("application/x-unknown-thing", ".bin"),
])
def test_extension_follows_media_type(store: ArtifactStore, media_type: str, ext: str) -> None:
    m = store.put("run_e", "s", "t", b"x", media_type)
    assert Path(m.local_path).suffix == ext
    assert m.media_type == media_type.lower()


def test_explicit_extension_and_bad_extension(store: ArtifactStore) -> None:
    assert store.put("run_e", "s", "t", b"x", "application/gzip", ext=".tar.gz").local_path.endswith(".tar.gz")
    for bad in ("png", "./png", ".p/g", "..", ".x" * 20):
        with pytest.raises(InvalidInputError) as info:
            store.put("run_e", "s", "t", b"x", "image/png", ext=bad)
        assert info.value.field == "ext"


def test_put_json_accepts_dicts_and_models(store: ArtifactStore) -> None:
    class Plan(BaseModel):
        title: str
        shots: list[int]

    from_dict = store.put_json("run_j", "script", "plan", {"title": "é", "n": [1, 2]}, {"tool": "t"})
    from_model = store.put_json("run_j", "script", "plan", Plan(title="x", shots=[1]))
    assert from_dict.media_type == "application/json" and from_dict.local_path.endswith(".json")
    assert json.loads(store.read_bytes(from_dict.uri)) == {"title": "é", "n": [1, 2]}
    assert json.loads(store.read_bytes(from_model.uri)) == {"title": "x", "shots": [1]}
    with pytest.raises(InvalidInputError) as info:
        store.put_json("run_j", "script", "plan", {"a": {"b": {1, 2}}})
    assert info.value.field == "obj.a.b"


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,field", [
    ({"run_id": "../x"}, "run_id"), ({"run_id": ""}, "run_id"), ({"run_id": "/abs"}, "run_id"),
    ({"stage": "a/b"}, "stage"), ({"stage": ".hidden"}, "stage"), ({"artifact_type": "x" * 200}, "artifact_type"),
    ({"artifact_type": "a\\b"}, "artifact_type"), ({"media_type": "png"}, "media_type"),
    ({"media_type": "image/png\nX-Evil: 1"}, "media_type"), ({"media_type": "image/png\n"}, "media_type"), ({"media": {"bitrate": 3}}, "media.bitrate"),
    ({"media": {"width": -1}}, "media.width"), ({"media": {"fps": float("nan")}}, "media.fps"),
    ({"media": {"width": 1.5}}, "media.width"), ({"media": {"height": True}}, "media.height"),
    ({"metadata": {"params": {"gen": object()}}}, "metadata.params.gen"), ({"metadata": [1]}, "metadata"),
    ({"source": "a string path"}, "source"), ({"source": 42}, "source"),
    ({"source": io.StringIO("text")}, "source"),
])
def test_bad_input_is_refused_naming_the_field(store: ArtifactStore, kwargs: dict, field: str) -> None:
    args = {"run_id": "run_v", "stage": "s", "artifact_type": "t", "source": b"x", "media_type": "image/png"}
    args.update(kwargs)
    with pytest.raises(InvalidInputError) as info:
        store.put(**args)
    assert info.value.field == field
    assert _index_rows(store) == []
    assert [p for p in _files_under(store.blob_root)] == []


def test_metadata_size_is_bounded(store: ArtifactStore) -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        store.put("run_v", "s", "t", b"x", "image/png", {"blob": "x" * 300_000})
    assert info.value.field == "metadata"


def test_artifact_size_limit_removes_temp_file(sparkle_home: Path) -> None:
    store = ArtifactStore(sparkle_home, max_artifact_bytes=1000)
    with pytest.raises(PayloadTooLargeError):
        store.put("run_big", "s", "t", io.BytesIO(b"x" * 5000), "application/octet-stream")
    assert _files_under(store.blob_root) == [] and _index_rows(store) == []


def test_large_stream_is_read_in_chunks(store: ArtifactStore) -> None:
    class CountingStream(io.RawIOBase):
        def __init__(self, total: int) -> None:
            self.left, self.largest_request = total, 0

        def read(self, size: int = -1) -> bytes:
            assert size > 0, "the store must never ask for the whole stream"
            self.largest_request = max(self.largest_request, size)
            n = min(size, self.left)
            self.left -= n
            return b"z" * n

    stream = CountingStream(3 * CHUNK_BYTES + 17)
    m = store.put("run_c", "s", "t", stream, "application/octet-stream")
    assert m.size_bytes == 3 * CHUNK_BYTES + 17
    assert stream.largest_request <= CHUNK_BYTES
    assert m.sha256 == hashlib.sha256(b"z" * (3 * CHUNK_BYTES + 17)).hexdigest()


# ----------------------------------------------------------------- move=True
def test_move_from_staging_renames_without_copy(store: ArtifactStore) -> None:
    staged = store.staging_dir() / "render.mp4"
    staged.write_bytes(b"frames" * 100)
    inode = staged.stat().st_ino
    m = store.put("run_m", "videos", "clip", staged, "video/mp4", move=True)
    assert not staged.exists()
    assert Path(m.local_path).stat().st_ino == inode, "move=True must rename, not copy"
    assert m.sha256 == hashlib.sha256(b"frames" * 100).hexdigest()
    store.verify(m.uri)


def test_move_refuses_files_outside_staging_and_symlinks(store: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    with pytest.raises(PathEscapeError) as info:
        store.put("run_m", "s", "t", outside, "application/octet-stream", move=True)
    assert info.value.field == "source" and outside.read_bytes() == b"secret"
    link = store.staging_dir() / "link.bin"
    link.symlink_to(outside)
    with pytest.raises(InvalidInputError, match="regular file"):
        store.put("run_m", "s", "t", link, "application/octet-stream", move=True)
    sneaky = store.staging_dir() / ".." / ".." / outside.name
    with pytest.raises(InvalidInputError):
        store.put("run_m", "s", "t", sneaky, "application/octet-stream", move=True)
    assert outside.read_bytes() == b"secret" and _index_rows(store) == []


def test_move_is_undone_when_index_insert_fails(store: ArtifactStore) -> None:
    staged = store.staging_dir() / "keep.bin"
    staged.write_bytes(b"precious")

    def fail(conn: object, manifest: object) -> None:
        raise RuntimeError("index insert failed")

    with pytest.raises(RuntimeError):
        store._put("run_m", "s", "t", staged, "application/octet-stream", None, move=True, on_insert=fail)
    assert staged.read_bytes() == b"precious", "the caller's file must be given back"
    assert _files_under(store.blob_root) == [] and _index_rows(store) == []


# ----------------------------------------------------------------- atomicity
def test_stream_failing_midway_leaves_nothing(store: ArtifactStore) -> None:
    class Exploding(io.RawIOBase):
        calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls == 3:
                raise OSError("network stream died")
            return b"y" * size

    with pytest.raises(OSError, match="network stream died"):
        store.put("run_a", "s", "t", Exploding(), "video/mp4")
    assert _files_under(store.blob_root) == [], "neither temp file nor final file may remain"
    assert _index_rows(store) == []


def test_index_failure_removes_the_published_file(store: ArtifactStore) -> None:
    def fail(conn: object, manifest: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        store._put("run_a", "s", "t", b"data", "image/png", None, on_insert=fail)
    assert _files_under(store.blob_root) == [] and _index_rows(store) == []


_CRASH_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sparkle_motion.artifacts import ArtifactStore
    root, phase, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = ArtifactStore(root)

    class SlowStream:
        sent = 0
        def read(self, size):
            self.sent += 1
            if self.sent == 3:
                ready.write_text("streaming")
                time.sleep(60)
            return b"p" * size

    if phase == "commit":
        real_write = store._db.write
        from contextlib import contextmanager
        @contextmanager
        def write_then_hang():
            with real_write() as conn:
                yield conn
                ready.write_text("before-commit")  # file renamed, row inserted, not committed
                time.sleep(60)
        store._db.write = write_then_hang
        store.put("run_k", "s", "t", b"complete payload", "image/png")
    else:
        store.put("run_k", "s", "t", SlowStream(), "video/mp4")
""")


@pytest.mark.parametrize("phase", ["stream", "commit"])
def test_sigkill_during_put_never_leaves_row_without_file_or_partial_final_file(
        sparkle_home: Path, tmp_path: Path, phase: str) -> None:
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, str(sparkle_home), phase, str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert child.poll() is None, "child exited early"
            assert time.monotonic() < deadline, "child never reached the crash point"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = ArtifactStore(sparkle_home)
    assert store.list("run_k") == [] and _index_rows(store) == []
    leftovers = _files_under(store.blob_root)
    if phase == "stream":
        # only a hidden temp file may remain; nothing under a final name
        assert leftovers and all(p.name.startswith(".tmp-") and p.name.endswith(".part") for p in leftovers)
    else:
        # the complete file was published, its row never committed: an orphan, not a corrupt entry
        assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"complete payload"
    assert sorted(store.sweep(older_than_s=0)) == leftovers
    assert _files_under(store.blob_root) == []
    # the store still works after the crash
    store.verify(store.put("run_k", "s", "t", b"after", "image/png").uri)


# -------------------------------------------------------------- path safety
@pytest.mark.parametrize("ref", [
    "artifact+fs://../etc/passwd", "artifact+fs://run/../../x", "artifact+fs:///etc/passwd",
    "artifact+fs://run/stage/..", "artifact+fs://run/./stage", "artifact+fs://run%2F..%2F..%2Fetc/stage/id",
    "artifact+fs://run/stage/id%00", "artifact+fs://run\\..\\x/stage/id", "artifact+fs://run//id",
    "../../etc/passwd", "/etc/passwd", "run/stage/id", "..\\..\\boot.ini", "..", "id%2F..",
])
def test_path_escapes_are_refused(store: ArtifactStore, ref: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.get(ref)
    assert info.value.field == "uri"
    assert isinstance(info.value, PathEscapeError) or "segment" in info.value.message or "three" in info.value.message


@pytest.mark.parametrize("ref", [
    "file:///etc/passwd", "http://example.com/x", "artifact://apps/a/users/u/artifacts/f/versions/0", "",
    "artifact+fs://", "artifact+fs://run/stage/id/extra", "artifact+fs://.hidden/stage/id",
    "artifact+fs://run/stage/" + "a" * 600, "ARTIFACT+FS://run/stage/id", "artifact+fs://run/st age/id",
])
def test_malformed_references_are_refused(store: ArtifactStore, ref: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.get(ref)
    assert info.value.field == "uri" and info.value.message


def test_non_string_reference_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError):
        store.get(None)  # type: ignore[arg-type]


def test_symlinked_run_folder_pointing_out_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    store.blob_root.mkdir(parents=True, exist_ok=True)
    (store.blob_root / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError):
        store.put("evil", "s", "t", b"x", "image/png")
    assert list(outside.iterdir()) == [], "nothing may be created outside the root"


def test_indexed_file_replaced_by_outward_symlink_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    m = store.put("run_s", "s", "t", b"innocent", "text/plain")
    Path(m.local_path).unlink()
    Path(m.local_path).symlink_to(secret)
    with pytest.raises(PathEscapeError):
        store.path_for(m.uri)
    with pytest.raises(PathEscapeError):
        store.open(m.uri)
    with pytest.raises(PathEscapeError) as caught:
        store.verify(m.uri)
    # The error names the store-relative path, never the root nor where the link points.
    shown = str(caught.value) + str(caught.value.to_dict())
    assert str(store.root) not in shown and str(tmp_path) not in shown and "secret" not in shown
    assert caught.value.context["path"] == Path(m.local_path).relative_to(store.root).as_posix()


def test_unknown_and_mismatched_references(store: ArtifactStore) -> None:
    m = store.put("run_u", "s", "t", b"x", "image/png")
    with pytest.raises(ArtifactNotFoundError):
        store.get("artifact+fs://run_u/s/t_000000000000")
    with pytest.raises(ArtifactNotFoundError):
        store.get(f"artifact+fs://other_run/s/{m.artifact_id}")
    with pytest.raises(ArtifactNotFoundError):
        store.get("nope_123")


# ----------------------------------------------------------------- integrity
def test_verify_detects_tampering_and_missing_files(store: ArtifactStore) -> None:
    m = store.put("run_t", "s", "t", b"original bytes", "application/octet-stream")
    path = Path(m.local_path)
    path.write_bytes(b"original bytez")
    with pytest.raises(IntegrityError) as info:
        store.verify(m.uri)
    assert info.value.context["expected_sha256"] == m.sha256
    assert info.value.context["actual_sha256"] == hashlib.sha256(b"original bytez").hexdigest()
    path.write_bytes(b"original bytes+")
    with pytest.raises(IntegrityError) as info:
        store.verify(m.uri)
    assert info.value.context["actual_size"] == m.size_bytes + 1
    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.verify(m.uri)
    with pytest.raises(ArtifactNotFoundError, match="missing"):
        store.path_for(m.uri)


# ----------------------------------------------------------------- retention
def test_runs_usage_delete_run_and_sweep(store: ArtifactStore) -> None:
    a1 = store.put("run_old", "s", "t", b"x" * 10, "image/png")
    store.put("run_old", "s2", "t", b"x" * 5, "image/png")
    b1 = store.put("run_new", "s", "t", b"y" * 7, "image/png")
    usage = store.runs_usage()
    assert [(u.run_id, u.bytes) for u in usage] == [("run_old", 15), ("run_new", 7)]
    assert usage[1].newest_created_at == b1.created_at
    assert store.delete_run("run_old") == 2
    assert not (store.blob_root / "run_old").exists()
    with pytest.raises(ArtifactNotFoundError):
        store.get(a1.uri)
    assert [u.run_id for u in store.runs_usage()] == ["run_new"]
    orphan = Path(b1.local_path).with_name("orphan.png")
    orphan.write_bytes(b"crash leftover")
    assert store.sweep(older_than_s=3600) == [], "young files are left alone (a put may be in flight)"
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    os.utime(b1.local_path, (old, old))
    assert store.sweep(older_than_s=3600) == [orphan]
    store.verify(b1.uri)


# ---------------------------------------------------------------- concurrency
def _writer(root: str, run_id: str, count: int) -> list[str]:
    store = ArtifactStore(root)
    uris = [store.put(run_id, "s", "frame", f"{run_id}-{i}".encode() * 50, "image/png",
                      {"i": i}).uri for i in range(count)]
    store.close()
    return uris


def test_concurrent_writers_from_two_processes(sparkle_home: Path) -> None:
    ArtifactStore(sparkle_home).close()  # migrate once up front; the race under test is the puts
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_writer, [(str(sparkle_home), "run_p1", 50), (str(sparkle_home), "run_p2", 50)])
    store = ArtifactStore(sparkle_home)
    for run_id, uris in zip(("run_p1", "run_p2"), results):
        listed = store.list(run_id)
        assert sorted(m.uri for m in listed) == sorted(uris) and len(listed) == 50
        for m in listed:
            store.verify(m.uri)
            assert store.read_bytes(m.uri) == f"{run_id}-{m.metadata['i']}".encode() * 50
    assert len(_index_rows(store)) == 100


def test_concurrent_writers_from_threads_share_one_store(store: ArtifactStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                store.put("run_th", f"s{n}", "t", bytes([n, i]), "application/octet-stream")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.list("run_th")) == 40

"""SparkleArtifactService: google-adk BaseArtifactService over the artifact store."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from google.adk.artifacts.base_artifact_service import BaseArtifactService
from google.genai import types

from sparkle_motion.artifacts import ArtifactStore, SparkleArtifactService
from sparkle_motion.errors import ArtifactNotFoundError, InvalidInputError

SCOPE = {"app_name": "sparkle", "user_id": "alice@example.com"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def service(store: ArtifactStore) -> SparkleArtifactService:
    return SparkleArtifactService(store)


def _png_part(data: bytes) -> types.Part:
    return types.Part(inline_data=types.Blob(mime_type="image/png", data=data, display_name="frame.png"))


def test_is_an_adk_artifact_service(service: SparkleArtifactService) -> None:
    assert isinstance(service, BaseArtifactService)


def test_inline_bytes_and_text_round_trip_with_versions(service: SparkleArtifactService,
                                                        store: ArtifactStore) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    v0 = run(service.save_artifact(**SCOPE, session_id="run_42", filename="frame.png", artifact=_png_part(png),
                                   custom_metadata={"shot": "shot_001"}))
    v1 = run(service.save_artifact(**SCOPE, session_id="run_42", filename="frame.png",
                                   artifact=types.Part(text="now a caption, é ✓")))
    assert (v0, v1) == (0, 1)

    first = run(service.load_artifact(**SCOPE, session_id="run_42", filename="frame.png", version=0))
    assert first.inline_data.data == png
    assert first.inline_data.mime_type == "image/png"
    assert first.inline_data.display_name == "frame.png"
    latest = run(service.load_artifact(**SCOPE, session_id="run_42", filename="frame.png"))
    assert latest.text == "now a caption, é ✓" and latest.inline_data is None

    assert run(service.list_versions(**SCOPE, session_id="run_42", filename="frame.png")) == [0, 1]
    versions = run(service.list_artifact_versions(**SCOPE, session_id="run_42", filename="frame.png"))
    assert [v.version for v in versions] == [0, 1]
    assert versions[0].custom_metadata == {"shot": "shot_001"} and versions[1].custom_metadata == {}
    assert [v.mime_type for v in versions] == ["image/png", "text/plain"]
    # canonical URIs are store URIs: the blobs live in the run's folder, checksummed
    manifest = store.verify(versions[0].canonical_uri)
    assert manifest.run_id == "run_42" and manifest.stage == "adk"
    assert manifest.sha256 == hashlib.sha256(png).hexdigest()
    assert manifest.metadata["filename"] == "frame.png" and manifest.metadata["source"] == "adk"
    assert store.read_bytes(versions[1].canonical_uri) == "now a caption, é ✓".encode()
    latest_version = run(service.get_artifact_version(**SCOPE, session_id="run_42", filename="frame.png"))
    assert latest_version == versions[1]
    assert run(service.get_artifact_version(**SCOPE, session_id="run_42", filename="frame.png", version=0)) \
        == versions[0]


def test_dict_artifacts_and_missing_lookups(service: SparkleArtifactService) -> None:
    version = run(service.save_artifact(**SCOPE, session_id="s1", filename="notes.txt",
                                        artifact={"inlineData": {"mimeType": "text/plain", "data": b"hi"}}))
    assert version == 0
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="notes.txt")).inline_data.data == b"hi"
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="notes.txt", version=7)) is None
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="absent")) is None
    assert run(service.load_artifact(**SCOPE, session_id="s2", filename="notes.txt")) is None
    assert run(service.get_artifact_version(**SCOPE, session_id="s1", filename="absent")) is None
    assert run(service.list_versions(**SCOPE, session_id="s1", filename="absent")) == []


def test_user_and_session_scopes_and_listing(service: SparkleArtifactService) -> None:
    run(service.save_artifact(**SCOPE, session_id="s1", filename="a.txt", artifact=types.Part(text="a")))
    run(service.save_artifact(**SCOPE, session_id="s1", filename="user:profile.json",
                              artifact=types.Part(text="{}")))
    run(service.save_artifact(**SCOPE, session_id="s2", filename="b.txt", artifact=types.Part(text="b")))
    run(service.save_artifact(**SCOPE, session_id=None, filename="shared.txt", artifact=types.Part(text="s")))
    run(service.save_artifact(app_name="sparkle", user_id="bob", session_id="s1", filename="bob.txt",
                              artifact=types.Part(text="bob")))
    assert run(service.list_artifact_keys(**SCOPE, session_id="s1")) == ["a.txt", "shared.txt",
                                                                          "user:profile.json"]
    assert run(service.list_artifact_keys(**SCOPE, session_id=None)) == ["shared.txt", "user:profile.json"]
    # a user-scoped artifact is visible from any session of that user
    assert run(service.load_artifact(**SCOPE, session_id="s2", filename="user:profile.json")).text == "{}"
    assert run(service.load_artifact(**SCOPE, filename="shared.txt")).text == "s"


def test_delete_removes_versions_rows_and_blobs(service: SparkleArtifactService, store: ArtifactStore) -> None:
    for text in ("one", "two"):
        run(service.save_artifact(**SCOPE, session_id="s1", filename="d.txt", artifact=types.Part(text=text)))
    uris = [v.canonical_uri for v in run(service.list_artifact_versions(**SCOPE, session_id="s1",
                                                                        filename="d.txt"))]
    paths = [store.path_for(uri) for uri in uris]
    run(service.delete_artifact(**SCOPE, session_id="s1", filename="d.txt"))
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="d.txt")) is None
    assert run(service.list_artifact_keys(**SCOPE, session_id="s1")) == []
    assert not any(p.exists() for p in paths)
    for uri in uris:
        with pytest.raises(ArtifactNotFoundError):
            store.get(uri)
    # versions restart after a delete, like ADK's own services
    assert run(service.save_artifact(**SCOPE, session_id="s1", filename="d.txt",
                                     artifact=types.Part(text="again"))) == 0
    run(service.delete_artifact(**SCOPE, session_id="s1", filename="never-saved"))  # no error


def test_store_delete_run_cascades_to_adk_versions(service: SparkleArtifactService, store: ArtifactStore) -> None:
    run(service.save_artifact(**SCOPE, session_id="run_gone", filename="x.png", artifact=_png_part(b"x")))
    store.delete_run("run_gone")
    assert run(service.list_artifact_keys(**SCOPE, session_id="run_gone")) == []


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/passwd", "a/../../b.txt", "..\\..\\win.ini",
                                      "%2e%2e%2fsecret", "sub/dir/report.final.pdf", "\u00e9t\u00e9.png", "...",
                                      "metadata.json", "versions/0"])
def test_hostile_filenames_stay_inside_the_root(service: SparkleArtifactService, store: ArtifactStore,
                                                filename: str) -> None:
    run(service.save_artifact(**SCOPE, session_id="s1", filename=filename, artifact=types.Part(text=filename)))
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename=filename)).text == filename
    assert run(service.list_artifact_keys(**SCOPE, session_id="s1")) == [filename]
    (version,) = run(service.list_artifact_versions(**SCOPE, session_id="s1", filename=filename))
    path = store.path_for(version.canonical_uri)
    assert path.is_relative_to(store.root / "artifacts" / "s1" / "adk")


def test_hostile_session_ids_map_to_safe_run_ids(service: SparkleArtifactService, store: ArtifactStore) -> None:
    run(service.save_artifact(**SCOPE, session_id="../../escape", filename="f.txt", artifact=types.Part(text="x")))
    (version,) = run(service.list_artifact_versions(**SCOPE, session_id="../../escape", filename="f.txt"))
    manifest = store.get(version.canonical_uri)
    assert manifest.run_id.startswith("adk-session-")
    assert store.path_for(version.canonical_uri).is_relative_to(store.blob_root)


def test_rewind_tombstone_loads_as_absent(service: SparkleArtifactService) -> None:
    run(service.save_artifact(**SCOPE, session_id="s1", filename="t.bin", artifact=_png_part(b"real")))
    tombstone = types.Part(inline_data=types.Blob(mime_type="application/octet-stream", data=b""))
    assert run(service.save_artifact(**SCOPE, session_id="s1", filename="t.bin", artifact=tombstone)) == 1
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="t.bin")) is None
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="t.bin", version=0)).inline_data.data \
        == b"real"


def test_file_data_and_artifact_references(service: SparkleArtifactService) -> None:
    external = types.Part(file_data=types.FileData(file_uri="gs://bucket/clip.mp4", mime_type="video/mp4"))
    run(service.save_artifact(**SCOPE, session_id="s1", filename="ext.mp4", artifact=external))
    loaded = run(service.load_artifact(**SCOPE, session_id="s1", filename="ext.mp4"))
    assert loaded.file_data.file_uri == "gs://bucket/clip.mp4" and loaded.file_data.mime_type == "video/mp4"
    (version,) = run(service.list_artifact_versions(**SCOPE, session_id="s1", filename="ext.mp4"))
    assert version.canonical_uri == "gs://bucket/clip.mp4"

    run(service.save_artifact(**SCOPE, session_id="s1", filename="target.txt", artifact=types.Part(text="T")))
    ref_uri = ("artifact://apps/sparkle/users/alice@example.com/sessions/s1/artifacts/target.txt/versions/0")
    ref = types.Part(file_data=types.FileData(file_uri=ref_uri))
    run(service.save_artifact(**SCOPE, session_id="s1", filename="alias.txt", artifact=ref))
    assert run(service.load_artifact(**SCOPE, session_id="s1", filename="alias.txt")).text == "T"

    foreign = types.Part(file_data=types.FileData(
        file_uri="artifact://apps/sparkle/users/mallory/sessions/s1/artifacts/target.txt/versions/0"))
    with pytest.raises(InvalidInputError):
        run(service.save_artifact(**SCOPE, session_id="s1", filename="steal.txt", artifact=foreign))


@pytest.mark.parametrize("kwargs,field", [
    ({"artifact": types.Part()}, "artifact"),
    ({"filename": ""}, "filename"),
    ({"app_name": ""}, "app_name"),
    ({"user_id": "x" * 2000}, "user_id"),
    ({"custom_metadata": {"bad": object()}}, "custom_metadata.bad"),
])
def test_bad_saves_are_refused(service: SparkleArtifactService, store: ArtifactStore,
                               kwargs: dict, field: str) -> None:
    args: dict[str, Any] = {**SCOPE, "session_id": "s1", "filename": "f.txt", "artifact": types.Part(text="x")}
    args.update(kwargs)
    with pytest.raises(InvalidInputError) as info:
        run(service.save_artifact(**args))
    assert info.value.field == field
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("SELECT COUNT(*) FROM adk_artifact_versions").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 0


def test_versions_survive_a_new_service_instance(sparkle_home: Path) -> None:
    first = SparkleArtifactService(ArtifactStore(sparkle_home))
    run(first.save_artifact(**SCOPE, session_id="s1", filename="p.png", artifact=_png_part(b"abc")))
    second = SparkleArtifactService(ArtifactStore(sparkle_home))
    assert run(second.save_artifact(**SCOPE, session_id="s1", filename="p.png", artifact=_png_part(b"def"))) == 1
    assert run(second.load_artifact(**SCOPE, session_id="s1", filename="p.png", version=0)).inline_data.data \
        == b"abc"


def test_concurrent_saves_get_distinct_versions(service: SparkleArtifactService) -> None:
    async def save_many() -> list[int]:
        return await asyncio.gather(*[
            service.save_artifact(**SCOPE, session_id="s1", filename="c.txt", artifact=types.Part(text=str(i)))
            for i in range(12)])

    versions = run(save_many())
    assert sorted(versions) == list(range(12))
    texts = {run(service.load_artifact(**SCOPE, session_id="s1", filename="c.txt", version=v)).text
             for v in versions}
    assert texts == {str(i) for i in range(12)}

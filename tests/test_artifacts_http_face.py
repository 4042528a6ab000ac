"""The store's HTTP face (artifacts/http_face.py): Range, HEAD, verified upload, refusals, auth, mounting."""

from __future__ import annotations

import hashlib
import os

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.http_face import create_artifact_router
from sparkle_motion.artifacts.http_protocol import CHECKSUM_HEADER, METADATA_HEADER, UPLOAD_PATH, encode_metadata_header
from sparkle_motion.config import load_settings
from sparkle_motion.services.common import install_common

TOKEN = "face-token-0123456789abcdef"


def _profile(tmp_path, extra: str = "") -> str:
    path = tmp_path / "profile.yaml"
    base = (load_settings({}).profile_path).read_text()
    path.write_text(base + "\n" + extra)
    return str(path)


def _app(tmp_path, *, token: str | None = None, max_upload: int = 1 << 20) -> tuple[TestClient, ArtifactStore]:
    env = {"SPARKLE_HOME": str(tmp_path / "home"),
           "SPARKLE_PROFILE": _profile(tmp_path, f"store: {{max_upload_bytes: {max_upload}}}\n")}
    if token:
        env["SPARKLE_TOKEN"] = token
    settings = load_settings(env)
    store = ArtifactStore(settings.home)
    app = FastAPI()
    install_common(app, "face_test", "0", settings, body_limits={UPLOAD_PATH: settings.store.max_upload_bytes})
    app.include_router(create_artifact_router(lambda: store, settings))
    return TestClient(app), store


@pytest.fixture
def face(tmp_path):
    client, store = _app(tmp_path)
    with client:
        yield client, store
    store.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_content_whole_head_and_ranges(face):
    client, store = face
    data = os.urandom(300_000)
    m = store.put("run_a", "clips", "video_clip", data, "video/mp4")
    url = f"/artifacts/{m.artifact_id}/content"

    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers[CHECKSUM_HEADER] == m.sha256 == _sha(whole.content)
    assert whole.headers["etag"] == f'"{m.sha256}"'
    assert whole.headers["accept-ranges"] == "bytes"
    assert "content-disposition" not in whole.headers

    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers[CHECKSUM_HEADER] == m.sha256 and int(head.headers["content-length"]) == len(data)

    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    open_end = client.get(url, headers={"Range": f"bytes={len(data) - 5}-"})
    assert open_end.status_code == 206 and open_end.content == data[-5:]

    beyond = client.get(url, headers={"Range": f"bytes={len(data)}-{len(data) + 10}"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"

    download = client.get(url, params={"download": 1})
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;") and f"video_clip-{m.artifact_id}.mp4" in disposition


def test_manifest_and_refusals(face):
    client, store = face
    m = store.put("run_a", "plan", "movie_plan", b"{}", "application/json")
    got = client.get(f"/artifacts/{m.artifact_id}/manifest")
    assert got.status_code == 200 and got.json() == m.model_dump(mode="json")

    missing = client.get("/artifacts/video_clip_000000000000/content")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "artifact_not_found"
    for bad in ("..", "%2e%2e", ".hidden", "a%00b", "a%5C..%5Cb"):
        response = client.get(f"/artifacts/{bad}/content")
        assert response.status_code in (404, 422), (bad, response.status_code)
        if response.status_code == 422:
            assert response.json()["error"]["field"] == "artifact_id"
    # Path syntax never reaches the filesystem: encoded separators do not match the route at all.
    escaped = client.get("/artifacts/..%2F..%2Fsparkle.db/content")
    assert escaped.status_code in (404, 422) and b"SQLite" not in escaped.content


def test_upload_stored_verified_and_readable(face):
    client, store = face
    data = os.urandom(200_000)
    metadata = {"tool": "videos_wan", "seed": 7}
    response = client.post(UPLOAD_PATH, content=data,
                           params={"run_id": "run_up", "stage": "video_clips", "artifact_type": "video_clip",
                                   "media_type": "video/mp4", "duration_s": 2.0, "width": 64},
                           headers={CHECKSUM_HEADER: _sha(data), METADATA_HEADER: encode_metadata_header(metadata)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == _sha(data) and body["size_bytes"] == len(data)
    assert body["metadata"] == metadata and body["duration_s"] == 2.0 and body["width"] == 64
    stored = store.verify(body["uri"])
    assert stored.run_id == "run_up" and stored.stage == "video_clips"
    assert client.get(f"/artifacts/{stored.artifact_id}/content").content == data
    assert list((store.root / "staging").iterdir()) == []


def test_corrupt_upload_refused_and_nothing_stored(face):
    client, store = face
    data = b"the real bytes" * 100
    corrupted = data[:-1] + b"X"
    response = client.post(UPLOAD_PATH, content=corrupted,
                           params={"run_id": "run_up", "stage": "s", "artifact_type": "blob",
                                   "media_type": "application/octet-stream"},
                           headers={CHECKSUM_HEADER: _sha(data)})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "checksum_mismatch" and error["field"] == CHECKSUM_HEADER
    assert error["context"]["actual_sha256"] == _sha(corrupted)
    assert store.list("run_up") == []
    assert list((store.root / "staging").iterdir()) == []


@pytest.mark.parametrize("params, headers, field", [
    ({"run_id": "../etc", "stage": "s", "artifact_type": "a", "media_type": "text/plain"}, {}, "run_id"),
    ({"run_id": "r", "stage": "..", "artifact_type": "a", "media_type": "text/plain"}, {}, "stage"),
    ({"run_id": "r", "stage": "s", "artifact_type": "a/b", "media_type": "text/plain"}, {}, "artifact_type"),
    ({"run_id": "r", "stage": "s", "artifact_type": "a", "media_type": "application/x-sh"}, {}, "media_type"),
    ({"run_id": "r", "stage": "s", "artifact_type": "a", "media_type": "text/plain"},
     {CHECKSUM_HEADER: "not-hex"}, CHECKSUM_HEADER),
    ({"run_id": "r", "stage": "s", "artifact_type": "a", "media_type": "text/plain"},
     {METADATA_HEADER: "!!notbase64!!"}, METADATA_HEADER),
])
def test_upload_refuses_bad_ids_types_and_headers(face, params, headers, field):
    client, store = face
    data = b"hello"
    response = client.post(UPLOAD_PATH, content=data, params=params,
                           headers={CHECKSUM_HEADER: _sha(data), **headers})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"].get("field", "")
    assert not (store.root / "artifacts").exists() or not any((store.root / "artifacts").rglob("*.*"))


def test_upload_size_limit(tmp_path):
    client, store = _app(tmp_path, max_upload=1000)
    with client:
        params = {"run_id": "r", "stage": "s", "artifact_type": "a", "media_type": "application/octet-stream"}
        data = b"x" * 1001
        declared = client.post(UPLOAD_PATH, content=data, params=params, headers={CHECKSUM_HEADER: _sha(data)})
        assert declared.status_code == 413

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            for _ in range(11):
                yield b"y" * 100

        streamed = client.post(UPLOAD_PATH, content=chunks(), params=params,
                               headers={CHECKSUM_HEADER: _sha(b"y" * 1100)})
        assert streamed.status_code == 413
        ok = client.post(UPLOAD_PATH, content=b"z" * 1000, params=params, headers={CHECKSUM_HEADER: _sha(b"z" * 1000)})
        assert ok.status_code == 201
        # Other routes keep the service's own, smaller limit.
        assert store.list("r")[0].size_bytes == 1000
    store.close()


def test_bearer_token_guards_the_face(tmp_path):
    client, store = _app(tmp_path, token=TOKEN)
    with client:
        m = store.put("run_a", "s", "blob", b"secret", "application/octet-stream")
        assert client.get(f"/artifacts/{m.artifact_id}/content").status_code == 401
        assert client.post(UPLOAD_PATH, content=b"x", params={"run_id": "r", "stage": "s", "artifact_type": "a",
                                                              "media_type": "text/plain"},
                           headers={CHECKSUM_HEADER: _sha(b"x")}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get(f"/artifacts/{m.artifact_id}/content", headers=auth).content == b"secret"
    store.close()


def test_production_agent_mounts_the_face_next_to_artifacts_view(tmp_path):
    from sparkle_motion.agents.production_service import create_app

    settings = load_settings({"SPARKLE_HOME": str(tmp_path / "home")})
    app = create_app(settings)
    with TestClient(app) as client:
        store = app.state.production.store
        data = b"frame" * 50
        up = client.post(UPLOAD_PATH, content=data, params={"run_id": "run_m", "stage": "s", "artifact_type": "blob",
                                                            "media_type": "application/octet-stream"},
                         headers={CHECKSUM_HEADER: _sha(data)})
        assert up.status_code == 201, up.text
        assert client.get(f"/artifacts/{up.json()['artifact_id']}/content").content == data
        assert store.verify(up.json()["uri"]).size_bytes == len(data)
        # The existing run view still answers on /artifacts?run_id= (404: no such run).
        view = client.get("/artifacts", params={"run_id": "run_m"})
        assert view.status_code == 404 and view.json()["error"]["code"] != "method_not_allowed"
    app.state.production.close()

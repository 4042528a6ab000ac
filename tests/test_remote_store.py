"""A tool with ``store.mode: http`` reads and writes only through production_agent's artifact face.

The tool process gets an empty SPARKLE_HOME of its own; production_agent, on another
home, is the store's host. The test proves the transfer: the tool's home stays
empty, the production host's store holds the outputs with verified checksums, and
bytes corrupted in transit are refused with a checksum error at either end.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import yaml

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.artifacts.http_store import HttpArtifactStore, open_tool_store
from sparkle_motion.config import load_settings, project_path
from sparkle_motion.errors import IntegrityError
from sparkle_motion.media import VideoWriter
from sparkle_motion.testing import free_port, running_tool
from media_fixtures import harmonic_bursts

W, H, FPS, FRAMES = 96, 64, 24, 24
RUN = "remote-store-test"


def _clip(path: Path) -> Path:
    yy, xx = np.mgrid[0:H, 0:W]
    with VideoWriter(path, W, H, FPS, crf=23, preset="ultrafast") as writer:
        for i in range(FRAMES):
            writer.write(np.stack([(xx + 3 * i) % 255, (yy * 2 + i) % 255, np.full_like(xx, i * 9 % 255)],
                                  axis=-1).astype(np.uint8))
    return path


def _remote_profile(path: Path, url: str) -> Path:
    profile = yaml.safe_load(project_path("configs/profiles/cpu.yaml").read_text())
    profile["store"] = {"mode": "http", "url": url}
    path.write_text(yaml.safe_dump(profile))
    return path


class _CorruptingTransport(httpx.BaseTransport):
    """Flips one byte of request bodies (``uploads``) or response bodies (``downloads``): a bad wire."""

    def __init__(self, *, uploads: bool = False, downloads: bool = False) -> None:
        self.inner = httpx.HTTPTransport()
        self.uploads, self.downloads = uploads, downloads

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.uploads and request.method == "POST":
            body = bytearray(request.read())
            body[len(body) // 2] ^= 0xFF
            request = httpx.Request(request.method, request.url, headers=request.headers, content=bytes(body))
        response = self.inner.handle_request(request)
        if self.downloads and request.url.path.endswith("/content"):
            body = bytearray(response.read())
            body[0] ^= 0xFF
            return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))
        return response


def test_settings_choose_the_store():
    local = load_settings({"SPARKLE_HOME": "/tmp/x"})
    assert local.store.mode == "local"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    prod_home = tmp_path_factory.mktemp("store-host")
    src = tmp_path_factory.mktemp("remote-src")
    port = free_port()
    with running_tool("production_agent", home=prod_home, port=port, env={"SPARKLE_TOKEN": None}) as prod:
        store = ArtifactStore(prod_home)
        inputs = {
            "video": store.put(RUN, "inputs", "input", _clip(src / "clip.mp4"), "video/mp4").uri,
            "audio": store.put(RUN, "inputs", "input",
                               harmonic_bursts(src / "speech.wav", FRAMES / FPS, [(0.2, 0.6)], amplitude=0.1,
                                               sr=24000), "audio/wav").uri,
        }
        yield {"prod": prod, "store": store, "inputs": inputs, "url": prod.url, "home": prod_home}
        store.close()


def test_remote_tool_reads_and_writes_only_through_the_face(host, tmp_path):
    tool_home = tmp_path / "tool-home"
    tool_home.mkdir()
    profile = _remote_profile(tmp_path / "remote.yaml", host["url"])
    assert open_tool_store(load_settings({"SPARKLE_PROFILE": str(profile), "SPARKLE_HOME": str(tool_home)})).url \
        == host["url"]
    env = {"SPARKLE_PROFILE": str(profile), "SPARKLE_TOKEN": None}
    with running_tool("lipsync_wav2lip", home=tool_home, env=env) as tool:
        response = tool.client.post("/invoke", json={"run_id": RUN, "video_uri": host["inputs"]["video"],
                                                     "audio_uri": host["inputs"]["audio"]}, timeout=120)
        assert response.status_code == 200, response.text + tool.output_tail()
        body = response.json()
        # The tool host's own view of the store: nothing at all, during and after the call.
        assert list(tool_home.iterdir()) == [], sorted(p.name for p in tool_home.rglob("*"))
        tool_events = [r.get("event") for r in tool.log_records()]
    assert list(tool_home.iterdir()) == []
    assert tool_events.count("remote_put") == len(body["artifacts"]) >= 2

    store: ArtifactStore = host["store"]
    for artifact in body["artifacts"]:
        stored = store.verify(artifact["uri"])  # re-hashes the blob on the production host
        assert stored.sha256 == artifact["sha256"] and stored.metadata["tool"] == "lipsync_wav2lip"
        assert Path(stored.local_path).is_relative_to(host["home"])
    with av.open(str(store.path_for(body["video_uri"]))) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
    # production_agent served the inputs' bytes and took the outputs' uploads.
    served = [(r.get("method"), r.get("path")) for r in host["prod"].log_records() if r.get("event") == "http.request"]
    for uri in host["inputs"].values():
        assert ("GET", f"/artifacts/{uri.rsplit('/', 1)[1]}/content") in served
    assert served.count(("POST", "/artifacts/upload")) == len(body["artifacts"])


def test_corrupted_upload_and_download_are_refused_with_a_checksum_error(host, tmp_path):
    store: ArtifactStore = host["store"]
    data = os.urandom(50_000)
    bad_wire = HttpArtifactStore(host["url"], cache_root=tmp_path / "c1", transport=_CorruptingTransport(uploads=True))
    with pytest.raises(IntegrityError) as caught:
        bad_wire.put("run_corrupt", "s", "blob", data, "application/octet-stream")
    assert caught.value.code == "checksum_mismatch"
    assert caught.value.context["expected_sha256"] == hashlib.sha256(data).hexdigest()
    assert store.list("run_corrupt") == []
    bad_wire.close()

    good = HttpArtifactStore(host["url"], cache_root=tmp_path / "c2")
    manifest = good.put("run_ok", "s", "blob", data, "application/octet-stream")
    assert store.verify(manifest.uri).sha256 == hashlib.sha256(data).hexdigest()
    bad_read = HttpArtifactStore(host["url"], cache_root=tmp_path / "c3",
                                 transport=_CorruptingTransport(downloads=True))
    with pytest.raises(IntegrityError) as caught:
        bad_read.path_for(manifest.uri)
    assert caught.value.code == "checksum_mismatch"
    assert not any(p.is_file() for p in (tmp_path / "c3").rglob("*"))  # nothing corrupt was cached
    fresh = HttpArtifactStore(host["url"], cache_root=tmp_path / "c4")
    assert fresh.read_bytes(manifest.artifact_id) == data
    for s in (good, bad_read, fresh):
        s.close()

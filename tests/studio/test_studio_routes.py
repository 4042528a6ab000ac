"""The studio's routes on a real production_agent process: the page loads without the token, the API
does not; /studio/validate names each broken field; SRT subtitles come back as WebVTT."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.studio.subtitles import srt_to_vtt
from sparkle_motion.testing import running_tool, write_test_profile

PLANS = Path(__file__).parent.parent / "data" / "plans"
TOKEN = "studio-test-token"
SRT = "1\r\n00:00:00,500 --> 00:00:02,250\r\nMara: Look at the lights.\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\nJun: I see them.\r\n"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("studio-routes")
    profile = write_test_profile(home)
    with running_tool("production_agent", home=home, env={"SPARKLE_PROFILE": str(profile), "SPARKLE_TOKEN": TOKEN},
                      ready_timeout=120) as tool:
        tool.client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield tool, home


def plan() -> dict:
    return json.loads((PLANS / "rooftop_valid.json").read_text())


def test_the_page_and_its_modules_load_without_the_token_but_the_api_needs_it(agent):
    tool, _ = agent
    anonymous = tool.client.__class__(base_url=tool.url, timeout=30)
    with anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<script type="module" src="/studio/static/js/app.js">' in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
        module = anonymous.get("/studio/static/js/app.js")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]
        assert anonymous.get("/runs").status_code == 401
        assert anonymous.post("/studio/validate", json={"plan": plan()}).status_code == 401
    # A raw '..' (http.client does not normalise the path the way httpx does) stays inside the static folder.
    connection = http.client.HTTPConnection(tool.host, tool.port, timeout=30)
    try:
        connection.request("GET", "/studio/static/../../runs")
        escaped = connection.getresponse()
        assert escaped.status == 404 and b"runs" not in escaped.read()
    finally:
        connection.close()


def test_static_files_link_nothing_outside_the_package():
    static = Path(__file__).parents[2] / "src" / "sparkle_motion" / "studio" / "static"
    texts = {p.name: p.read_text() for p in static.rglob("*") if p.suffix in (".js", ".css", ".html")}
    assert len(texts) >= 10
    for name, text in texts.items():
        assert "://" not in text, f"{name} links an external URL"


def test_validate_names_each_broken_field(agent):
    tool, _ = agent
    good = tool.client.post("/studio/validate", json={"plan": plan()})
    assert good.status_code == 200, good.text
    assert good.json()["valid"] is True and good.json()["errors"] == []
    broken = plan()
    broken["shots"][1]["start_base_image_id"] = "frame_nope"
    broken["shots"][0]["duration_sec"] = -1
    answer = tool.client.post("/studio/validate", json={"plan": broken}).json()
    assert answer["valid"] is False
    paths = {e["path"] for e in answer["errors"]}
    assert "shots[0].duration_sec" in paths
    unknown = tool.client.post("/studio/validate", json={"plan": {**plan(), "render_profile": {
        "video": {"model_id": "wan-2.1"}}}}).json()
    assert [e["path"] for e in unknown["errors"]] == ["render_profile.video.model_id"]


def test_subtitles_come_back_as_webvtt(agent):
    tool, home = agent
    store = ArtifactStore(home)
    try:
        srt = store.put("run_subs", "assemble", "subtitles", SRT.encode(), "application/x-subrip", ext=".srt")
        wav = store.put("run_subs", "assemble", "tts_timeline", b"RIFF", "audio/wav", ext=".wav")
    finally:
        store.close()
    vtt = tool.client.get(f"/studio/subtitles/{srt.artifact_id}.vtt")
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n1\n00:00:00.500 --> 00:00:02.250\nMara: Look at the lights.\n")
    assert tool.client.get(f"/studio/subtitles/{wav.artifact_id}.vtt").status_code == 422
    assert tool.client.get("/studio/subtitles/art_missing.vtt").status_code == 404


def test_srt_to_vtt_keeps_every_cue():
    vtt = srt_to_vtt("\ufeff" + SRT)
    assert vtt.count("-->") == 2 and "," not in vtt.split("\n")[2]
    assert vtt.endswith("Jun: I see them.\n")

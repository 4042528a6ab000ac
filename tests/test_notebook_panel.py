"""The notebook control panel against a live mesh: clicks, their HTTP effects, and widget state."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import av
import httpx
import ipywidgets as widgets
import pytest
from mesh_harness import running_mesh
from store_fixtures import put_old_and_new_run

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.config import load_settings
from sparkle_motion.errors import IntegrityError, InvalidInputError, PathEscapeError
from sparkle_motion.notebook import (
    ControlPanel,
    PanelActionError,
    mesh_readiness,
    prune_runs,
    run_preflight,
    start_mesh,
)
from sparkle_motion.notebook.preflight import check_disk, check_gpu, check_profile
from sparkle_motion.notebook.previews import read_artifact_bytes, resolve_local_path
from sparkle_motion.testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("notebook")]

IDEA = "two friends on a neon rooftop reconcile"


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("panel-mesh")
    with running_mesh(home, render={"fps": 12, "width": 192, "height": 112}) as settings:
        yield settings


@pytest.fixture(scope="module")
def production(mesh_settings):
    with httpx.Client(base_url=mesh_settings.url_for("production_agent"), timeout=30) as client:
        yield client


@pytest.fixture
def panel(mesh_settings):
    control = ControlPanel(mesh_settings, poll_interval_s=0.25)
    yield control
    control.close()


def run_count(production: httpx.Client) -> int:
    return len(production.get("/runs", params={"limit": 500}).json()["runs"])


def generate(panel: ControlPanel, *, shots: int = 2, duration: float = 4.0, seed: str = "7") -> None:
    panel.prompt.value = IDEA
    panel.shots.value = shots
    panel.duration.value = duration
    panel.seed.value = seed
    panel.generate_button.click()
    panel.wait_idle(60)
    panel.raise_for_error()


def widgets_of(root: widgets.Widget, kind: type) -> list[widgets.Widget]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if isinstance(node, kind):
            found.append(node)
        stack.extend(getattr(node, "children", ()) or ())
    return found


# -- plan generation and review ------------------------------------------------------------------


def test_new_panel_allows_only_planning(panel, production):
    assert not panel.generate_button.disabled
    for button in (panel.load_plan_button, panel.run_button, panel.pause_button, panel.resume_button,
                   panel.stop_button, panel.final_button, panel.refresh_artifacts_button):
        assert button.disabled, button.description
    before = run_count(production)
    panel.run_button.click()  # ipywidgets runs handlers of disabled buttons; the panel must refuse
    panel.pause_button.click()
    panel.wait_idle(10)
    assert run_count(production) == before
    refused = [m for m in panel.errors if m.code == "not_allowed" or m.field == "plan"]
    assert {m.action for m in refused} == {"Run Production", "Pause"}
    assert "no plan loaded" in panel.messages_view.value
    with pytest.raises(PanelActionError):
        panel.raise_for_error()


def test_generate_plan_fills_uri_and_review(panel, mesh_settings):
    generate(panel)
    uri = panel.plan_uri.value
    assert uri.startswith("artifact+fs://adhoc/plan/")
    store = ArtifactStore(mesh_settings.home)
    try:
        stored = json.loads(store.path_for(uri).read_text())["validated_plan"]
    finally:
        store.close()
    assert panel.review.is_valid and not panel.review.edited
    assert panel.review.draft["shots"] == stored["shots"]
    assert len(panel.review.plan.shots) == 2
    summary = panel.review.summary.value
    assert panel.review.plan.plan_id in summary and "<td>2</td>" in summary and "4.00 s" in summary
    expected = {"shots[0].duration_sec", "shots[1].visual_description", "base_images[2].prompt",
                "dialogue_timeline[0].start_time_sec"}
    assert expected <= set(panel.review.fields)
    assert panel.review.fields["base_images[0].prompt"].value == stored["base_images"][0]["prompt"]
    assert not panel.run_button.disabled and not panel.send_inline.disabled
    assert any("Generate Plan" == m.action and uri in m.message for m in panel.messages)


def test_invalid_edit_blocks_production_until_fixed(panel, production):
    generate(panel)
    original = panel.review.fields["shots[0].duration_sec"].value
    panel.review.set_field("shots[0].duration_sec", original + 3.0)
    assert not panel.review.is_valid
    assert [v["rule"] for v in panel.review.violations] == ["timeline_end"]
    last_entry = f"dialogue_timeline[{len(panel.review.draft['dialogue_timeline']) - 1}]"
    assert panel.review.violations[0]["path"] == last_entry
    # The offending entry's fields are outlined; the edited (valid on its own) field is not.
    assert panel.review.fields[f"{last_entry}.start_time_sec"].layout.border
    assert not panel.review.fields["shots[0].duration_sec"].layout.border
    assert panel.run_button.disabled
    assert "fix them before production" in panel.review.violations_view.value
    before = run_count(production)
    panel.run_button.click()
    panel.wait_idle(10)
    assert run_count(production) == before
    assert panel.errors[-1].code == "plan_invalid" and panel.errors[-1].details

    panel.review.set_field("shots[0].duration_sec", original)
    assert panel.review.is_valid and not panel.review.edited
    assert not panel.run_button.disabled


def test_edited_plan_is_validated_and_sent_inline(panel, production, mesh_settings):
    generate(panel)
    prompt = panel.review.fields["base_images[1].prompt"].value + ", lit by a single red neon sign"
    panel.review.set_field("base_images[1].prompt", prompt)
    assert panel.review.is_valid and panel.review.edited
    assert panel.send_inline.disabled and "edited" in panel.inline_note.value
    body = panel.production_request()
    assert "plan_uri" not in body and body["plan"]["base_images"][1]["prompt"] == prompt

    panel.mode.value = "run"
    panel.qa_mode.value = "skip"
    panel.run_button.click()
    panel.wait_idle(30)
    panel.raise_for_error()
    status = panel.wait_for_status({"succeeded", "failed"}, 120)
    assert status["status"] == "succeeded", status["error"]
    # production_agent stored exactly the edited plan it was sent.
    arts = production.get("/artifacts", params={"run_id": panel.run_id, "stage": "plan_intake"}).json()
    intake = json.loads(Path(arts["stages"][0]["artifacts"][0]["local_path"]).read_text())
    assert intake["base_images"][1]["prompt"] == prompt


def test_load_plan_from_file_shows_violations_and_json_fix(panel, tmp_path):
    generate(panel)
    good = panel.review.draft
    broken = json.loads(json.dumps(good))
    broken["shots"][1]["start_base_image_id"] = "no_such_frame"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(broken))
    panel.plan_uri.value = str(path)
    panel.load_plan_button.click()
    panel.wait_idle(10)
    assert not panel.errors
    assert [v["path"] for v in panel.review.violations] == ["shots[1].start_base_image_id"]
    assert panel.run_button.disabled
    assert "no_such_frame" in panel.review.violations_view.value or "start_base_image_id" in \
        panel.review.violations_view.value
    assert panel.review.fields["shots[1].setting"].layout.border == ""  # only the bad field is marked
    assert panel.send_inline.disabled and "file" in panel.inline_note.value

    panel.review.apply_json("{ not json")
    assert panel.review.violations[0]["rule"] == "invalid_json" and panel.run_button.disabled
    panel.review.apply_json(json.dumps(good))
    assert panel.review.is_valid and not panel.run_button.disabled

    panel.plan_uri.value = "artifact+fs://adhoc/plan/movie_plan_000000000000"
    panel.load_plan_button.click()
    panel.wait_idle(10)
    assert panel.errors[-1].code == "artifact_not_found" and panel.errors[-1].field == "plan_uri"


# -- production, pause/resume, polling, artifacts, final video -------------------------------------------


def test_run_pause_resume_artifacts_and_final_video(panel, production, tmp_path, monkeypatch):
    generate(panel, shots=3, duration=6.0)
    panel.auto_poll = False  # this test drives the poller itself
    calls = []
    original_status = panel.production.status

    def counting_status(run_id):
        calls.append(("GET", "/status", time.monotonic()))
        return original_status(run_id)

    panel.production.status = counting_status
    panel.run_button.click()
    panel.wait_idle(30)
    panel.raise_for_error()
    run_id = panel.run_id
    assert run_id and panel.run_id_filter.value == run_id
    assert panel.status == "running"
    assert panel.run_button.disabled and not panel.pause_button.disabled and panel.resume_button.disabled

    panel.pause_button.click()
    panel.wait_idle(10)
    panel.raise_for_error()
    assert production.get("/status", params={"run_id": run_id}).json()["status"] == "paused"
    assert panel.pause_button.disabled and not panel.resume_button.disabled and not panel.stop_button.disabled
    assert "paused" in panel.status_view.value and panel.run_button.disabled

    # The poller runs in the background, honours a changed interval and stops at once when asked.
    started = time.monotonic()
    panel.poll_toggle.value = True
    assert time.monotonic() - started < 1.0 and panel.polling
    time.sleep(2.0)
    fast = [c for c in calls if c[1] == "/status" and c[2] >= started]
    assert len(fast) >= 3, len(fast)  # 0.25 s apart: ~8 unless the machine is very busy
    panel.poll_interval.value = 30.0
    time.sleep(0.6)  # the wait in progress ends, then the next is 30 s
    settled = len([c for c in calls if c[1] == "/status"])
    time.sleep(1.0)
    assert len([c for c in calls if c[1] == "/status"]) - settled <= 1
    stopping = time.monotonic()
    panel.poll_toggle.value = False
    assert not panel.polling and time.monotonic() - stopping < 2.0

    panel.poll_interval.value = 0.25
    panel.resume_button.click()
    panel.wait_idle(10)
    panel.raise_for_error()
    panel.start_polling()
    status = panel.wait_for_status({"succeeded", "failed"}, 120)
    assert status["status"] == "succeeded", status["error"]
    panel.wait_idle(30)  # the final video is fetched as soon as the run ends
    assert not panel.polling and not panel.poll_toggle.value
    assert panel.progress.value == 1.0 and "succeeded" in panel.status_view.value
    assert not panel.run_button.disabled and panel.pause_button.disabled and panel.stop_button.disabled

    # The final deliverable: shown inline from local bytes, equal to the artifact, a real H.264 film.
    arts = production.get("/artifacts", params={"run_id": run_id, "stage": "finalize"}).json()
    final = next(a for a in arts["artifacts"] if a["artifact_type"] == "video_final")
    (video,) = panel.final_video_box.children
    assert isinstance(video, widgets.Video) and video.format == "mp4"
    assert video.value == Path(final["local_path"]).read_bytes()
    assert final["checksum"] in panel.final_info.value
    with av.open(str(panel.final_path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert abs(float(container.duration / av.time_base) - 6.0) < 0.3

    monkeypatch.chdir(tmp_path)
    copied = panel.download_final()
    assert copied == tmp_path / "sparkle_downloads" / f"{run_id}.mp4"
    assert copied.read_bytes() == bytes(video.value)
    assert "sparkle_downloads" in panel.download_link.value and "href" in panel.download_link.value

    # Artifacts viewer: previews from the files, filtered by stage.
    panel.refresh_artifacts_button.click()
    panel.wait_idle(30)
    panel.raise_for_error()
    images = widgets_of(panel.artifacts_view, widgets.Image)
    audios = widgets_of(panel.artifacts_view, widgets.Audio)
    videos = widgets_of(panel.artifacts_view, widgets.Video)
    assert images and audios and videos
    assert bytes(images[0].value).startswith(b"\x89PNG") and bytes(audios[0].value)[:4] == b"RIFF"
    assert "finalize" in panel.artifacts_summary.value and "base_images" in panel.artifacts_summary.value
    panel.stage_filter.value = "base_images"
    panel.refresh_artifacts_button.click()
    panel.wait_idle(30)
    assert not widgets_of(panel.artifacts_view, widgets.Video) and not widgets_of(panel.artifacts_view, widgets.Audio)
    expected = production.get("/artifacts", params={"run_id": run_id, "stage": "base_images"}).json()
    pngs = {hashlib.sha256(Path(a["local_path"]).read_bytes()).hexdigest() for a in expected["artifacts"]
            if a["media_type"] == "image/png"}
    shown = {hashlib.sha256(bytes(w.value)).hexdigest() for w in widgets_of(panel.artifacts_view, widgets.Image)}
    kinds = [a["artifact_type"] for a in expected["artifacts"] if a["media_type"] == "image/png"]
    # 3 shots → 4 keyframes, plus the contact sheet drawn after them
    assert shown == pngs and len(pngs) == 5 and kinds.count("contact_sheet") == 1


def test_qa_skip_badge_is_persistent(panel):
    generate(panel)
    assert panel.qa_badge.layout.display == "none"
    panel.qa_mode.value = "skip"
    panel.send_inline.value = True
    assert "plan" in panel.production_request()
    panel.run_button.click()
    panel.wait_idle(30)
    assert panel.qa_skipped and panel.qa_badge.layout.display == ""
    assert "QA skipped" in panel.qa_badge.value and panel.run_id in panel.qa_badge.value
    status = panel.wait_for_status({"succeeded", "failed"}, 120)
    assert status["status"] == "succeeded" and status["qa_mode"] == "skip"
    panel.wait_idle(30)
    panel.refresh_status()
    assert panel.qa_badge.layout.display == "" and panel.qa_badge in panel.final_section.children
    assert all(s["stage"] != "qa_publish" or s["status"] in ("skipped", "succeeded", "cached") for s in status["steps"])

    panel.qa_mode.value = "full"  # the next run is validated: the badge goes with the run it belonged to
    panel.run_button.click()
    panel.wait_idle(30)
    assert not panel.qa_skipped and panel.qa_badge.layout.display == "none"
    panel.wait_for_status({"succeeded", "failed"}, 120)
    panel.wait_idle(30)


def test_stopped_run_explains_missing_final_and_resumes_from_finalize(panel, production):
    generate(panel, shots=3, duration=6.0)
    panel.auto_poll = False
    panel.run_button.click()
    panel.wait_idle(30)
    stopped_id = panel.run_id
    panel.stop_button.click()
    panel.wait_idle(10)
    panel.raise_for_error()
    assert panel.status == "stopped"
    assert panel.alert.layout.display == "" and "stopped" in panel.alert.value

    panel.final_button.click()
    panel.wait_idle(10)
    assert panel.final_path is None and not panel.final_video_box.children
    assert "stopped" in panel.final_missing_reason
    assert "Resume from" in panel.final_info.value
    assert not panel.resume_finalize_button.disabled and panel.download_button.disabled

    panel.auto_poll = True
    panel.resume_finalize_button.click()
    panel.wait_idle(30)
    panel.raise_for_error()
    assert panel.last_accepted["resume_from"] == "finalize"
    assert panel.run_id != stopped_id  # a stopped run stays stopped; the resume is a new run of its plan
    status = panel.wait_for_status({"succeeded", "failed"}, 120)
    assert status["status"] == "succeeded", status["error"]
    panel.wait_idle(30)
    assert panel.final_path is not None and panel.final_path.is_file()
    assert panel.resume_finalize_button.disabled
    assert production.get("/status", params={"run_id": stopped_id}).json()["status"] == "stopped"


def test_dry_mode_reports_the_plan_estimate(panel):
    generate(panel)
    panel.mode.value = "dry"
    panel.run_button.click()
    panel.wait_idle(30)
    panel.raise_for_error()
    assert panel.run_id.startswith("dry") and panel.status == "succeeded"
    assert panel.last_accepted["invocation_graph"]
    assert "dry run" in panel.messages[-1].message
    panel.final_button.click()
    panel.wait_idle(10)
    assert "dry run" in panel.final_missing_reason and "dry run" in panel.final_info.value
    assert panel.resume_finalize_button.disabled  # nothing to finalize: a dry run renders nothing


# -- endpoint errors ---------------------------------------------------------------------------------------


def test_endpoint_errors_name_the_endpoint_and_field(panel, mesh_settings):
    panel.prompt.value = IDEA
    panel.title.value = "x" * 201
    panel.generate_button.click()
    panel.wait_idle(30)
    error = panel.errors[-1]
    assert error.endpoint == f"POST {mesh_settings.url_for('script_agent')}/invoke"
    assert error.status == 422 and error.field and "title" in error.field
    assert error.endpoint in panel.messages_view.value and "422" in panel.messages_view.value
    assert not panel.generate_button.disabled  # an error leaves the panel usable

    panel.seed.value = "seven"
    panel.title.value = ""
    panel.generate_button.click()
    assert panel.errors[-1].field == "seed" and panel.errors[-1].endpoint is None

    panel.run_id_filter.value = "run_doesnotexist"
    panel.refresh_artifacts_button.click()
    panel.wait_idle(30)
    error = panel.errors[-1]
    assert error.endpoint == f"GET {mesh_settings.url_for('production_agent')}/artifacts"
    assert error.status == 404


def test_unreachable_service_is_reported_not_hung(mesh_settings):
    entry = mesh_settings.tools["production_agent"]
    dead = dataclasses.replace(mesh_settings, tools={**mesh_settings.tools,
                                                     "production_agent": dataclasses.replace(entry, port=free_port())})
    panel = ControlPanel(dead, retries=0)
    try:
        panel.run_id_filter.value = "run_x"
        started = time.monotonic()
        panel.refresh_artifacts_button.click()
        assert time.monotonic() - started < 0.5  # the click returns at once; the worker does the call
        panel.wait_idle(30)
        error = panel.errors[-1]
        assert error.code == "tool_unreachable" and error.endpoint.startswith("GET http://127.0.0.1:")
    finally:
        panel.close()


# -- previews, preflight, retention, mesh -----------------------------------------------------------------


def test_previews_refuse_paths_outside_root_and_bad_checksums(tmp_path):
    root = tmp_path / "home"
    (root / "artifacts").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG secret")
    with pytest.raises(PathEscapeError):
        resolve_local_path({"local_path": str(outside), "uri": "artifact+fs://r/s/a"}, root)
    link = root / "artifacts" / "link.png"
    link.symlink_to(outside)
    with pytest.raises(PathEscapeError):
        resolve_local_path({"local_path": str(link)}, root)
    inside = root / "artifacts" / "a.png"
    inside.write_bytes(b"\x89PNG data")
    entry = {"local_path": str(inside), "sha256": hashlib.sha256(b"other").hexdigest()}
    with pytest.raises(IntegrityError):
        read_artifact_bytes(entry, root, 1 << 20)
    entry["sha256"] = hashlib.sha256(b"\x89PNG data").hexdigest()
    assert read_artifact_bytes(entry, root, 1 << 20) == b"\x89PNG data"
    with pytest.raises(InvalidInputError):
        resolve_local_path({"local_path": str(root / "artifacts" / "gone.png")}, root)


def test_preflight_reports_every_check(mesh_settings, tmp_path, monkeypatch):
    report = run_preflight(mesh_settings)
    names = [c.name for c in report.checks]
    assert names == ["environment", "gpu", "disk", "profile", "ffmpeg"]
    assert report.ok and report.check("ffmpeg").status == "ok"
    assert "profile 'cpu-test'" in report.check("profile").detail
    assert "<table>" in report.to_html()

    gpu_settings = load_settings({"SPARKLE_PROFILE": "gpu", "SPARKLE_HOME": str(tmp_path)})
    result = check_profile(gpu_settings, gpu_present=False)
    assert result.status == "warn" and "need a GPU" in result.detail
    assert check_disk(tmp_path / "not" / "yet", min_free_bytes=1 << 60).status == "warn"

    # A hung driver: nvidia-smi that never answers is cut off at the timeout.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\nsleep 30\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    hung = check_gpu(timeout_s=0.5)
    assert hung.status == "warn" and "did not answer" in hung.detail and time.monotonic() - started < 5
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100, 81559 MiB, 0 MiB, 550.54'\n")
    assert check_gpu(timeout_s=5).detail.startswith("NVIDIA H100")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert check_gpu().status == "skip"


def test_mesh_readiness_and_start_mesh_reuse(mesh_settings):
    readiness = mesh_readiness(mesh_settings)
    assert readiness.all_ready and len(readiness.services) == len(mesh_settings.tools)
    again = start_mesh(mesh_settings, timeout_s=30)  # already up: returns at once, same processes
    assert again.all_ready and [s["pid"] for s in again.services] == [s["pid"] for s in readiness.services]
    assert "production_agent" in again.to_html()


def test_prune_is_a_dry_run_unless_applied(tmp_path):
    home = tmp_path / "retention-home"
    put_old_and_new_run(home)
    settings = load_settings({"SPARKLE_HOME": str(home)})
    dry = prune_runs(max_bytes=1500, settings=settings)
    assert not dry.applied and "would delete run_old" in str(dry) and "run_new" not in str(dry)
    store = ArtifactStore(home)
    try:
        assert store.list("run_old")
        applied = prune_runs(max_bytes=1500, apply=True, settings=settings)
        assert "deleted run_old" in str(applied)
        assert not store.list("run_old") and store.list("run_new")
    finally:
        store.close()
    with pytest.raises(InvalidInputError) as info:
        prune_runs(settings=settings)
    assert info.value.field == "older_than_days"


def test_notebook_home_honours_an_exported_sparkle_home(tmp_path, monkeypatch):
    from sparkle_motion.notebook import resolve_home

    monkeypatch.chdir(tmp_path)
    mounted = []

    def drive() -> Path:
        mounted.append(True)
        return tmp_path / "drive"

    assert resolve_home("", {"SPARKLE_HOME": "/data/films"}, drive_home=drive) == Path("/data/films")
    assert resolve_home("/p", {"SPARKLE_HOME": "/data/films"}, drive_home=drive) == Path("/p")
    assert not mounted, "an exported home must not be replaced by Drive"
    assert resolve_home("", {}, drive_home=drive) == tmp_path / "drive"
    assert resolve_home("", {}) == tmp_path / ".sparkle"


def test_the_notebook_cells_use_resolve_home_and_stop_a_headless_mesh():
    import nbformat

    from sparkle_motion.config import project_path

    nb = nbformat.read(project_path("notebooks/sparkle_motion.ipynb"), as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "resolve_home(SPARKLE_HOME" in source and 'Path.cwd() / ".sparkle"' not in source
    assert "stop_at_exit=HEADLESS" in source and "HEADLESS and readiness.started_here" in source

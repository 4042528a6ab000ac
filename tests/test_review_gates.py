"""Review gates over the whole mesh: stop after the keyframes, re-roll one, edit one, survive a restart, approve;
re-roll after the film and count, from the registry, exactly which steps ran again.

The plan has 4 shots over 5 keyframes; frame_002 closes shot_002 and opens shot_003, the two talking close-ups.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mesh_harness import mesh_env, running_mesh, wait_for_status
from sparkle_motion import mesh
from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.runs import RunRegistry

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mesh")]

PLAN = json.loads((Path(__file__).parent / "data" / "plans" / "four_shots_review.json").read_text())
FRAMES = [b["id"] for b in PLAN["base_images"]]
PORTRAITS = [f"cast_{c['id']}" for c in PLAN["characters"]]
ENDED = {"succeeded", "failed", "stopped", "awaiting_review"}


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("review"), render={"fps": 12, "width": 160, "height": 96}) as settings:
        yield settings


@pytest.fixture(scope="module")
def production(mesh_settings):
    with httpx.Client(base_url=mesh_settings.url_for("production_agent"), timeout=60) as client:
        yield client


def plan_with_seed(shift: int) -> dict:
    """The plan with other keyframe seeds: a test of its own, sharing no cached step with the others."""
    plan = json.loads(json.dumps(PLAN))
    plan["metadata"]["plan_id"] = f"four_shots_{shift}"
    for base in plan["base_images"]:
        base["seed"] += shift
    return plan


def start(production: httpx.Client, plan: dict = PLAN, **body) -> str:
    response = production.post("/invoke", json={"plan": plan, "mode": "run", **body})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def review(production: httpx.Client, run_id: str, body: dict, expect: int = 200) -> dict:
    response = production.post(f"/runs/{run_id}/review", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def executed(status: dict, since: int = 0) -> Counter:
    return Counter((s["stage"], s["item"]) for s in status["steps"][since:] if s["status"] == "succeeded")


def test_rerolling_frame_002_after_the_film_recomputes_only_what_touches_it(production, mesh_settings):
    first = wait_for_status(production, start(production), {"succeeded", "failed"}, timeout=900)
    assert first["status"] == "succeeded", first["error"]
    assert review(production, first["run_id"], {"approve": True}, expect=409)["error"]["code"] == \
        "not_awaiting_review"
    accepted = review(production, first["run_id"], {"regenerate": [{"item": "frame_002", "seed": 123}]})
    assert accepted["run_id"] != first["run_id"], "a finished run stays as it was; the re-roll is a new run"
    second = wait_for_status(production, accepted["run_id"], {"succeeded", "failed"}, timeout=900)
    assert second["status"] == "succeeded", second["error"]

    # Asserted from the registry itself, not from the service's view of it.
    steps = RunRegistry(mesh_settings.db_path).list_steps(second["run_id"])
    ran = Counter((s.stage, s.item) for s in steps if s.status == "succeeded")
    assert ran == Counter({
        ("base_images", "frame_002"): 1, ("base_images", "frame_002.qa"): 1,       # 1 keyframe (and its QA)
        ("base_images", "contact_sheet"): 1,                                        # the sheet shows it
        ("video_clips", "shot_002"): 1, ("video_clips", "shot_002.qa"): 1,         # the 2 clips touching it
        ("video_clips", "shot_003"): 1, ("video_clips", "shot_003.qa"): 1,
        ("lipsync", "shot_002"): 1, ("lipsync", "shot_003"): 1,                    # their lip-sync
        ("assemble", None): 1, ("qa_publish", "final.qa"): 1, ("finalize", None): 1,
    }), ran
    cached = {(s.stage, s.item) for s in steps if s.status == "cached"}
    assert {("base_images", f) for f in FRAMES if f != "frame_002"} <= cached
    assert {("video_clips", "shot_001"), ("video_clips", "shot_004"), ("plan_intake", None)} <= cached
    assert {s.stage for s in steps if s.status == "cached"} >= {"dialogue_audio"}
    assert all(s.status in ("succeeded", "cached") for s in steps)
    new_frame = next(s for s in steps if (s.stage, s.item) == ("base_images", "frame_002"))
    assert new_frame.output["seed"] == 123


def test_keyframes_gate_reroll_edit_restart_then_approve(production, mesh_settings):
    run_id = start(production, plan_with_seed(1), review=["keyframes"])
    waiting = wait_for_status(production, run_id, ENDED, timeout=900)
    assert waiting["status"] == "awaiting_review", waiting["error"]
    view = waiting["review"]
    assert view["gate"] == "keyframes" and view["stage"] == "base_images" and view["plan_revision"] == 0
    frames = {i["item"]: i for i in view["items"] if i["stage"] == "base_images"}
    assert sorted(frames) == FRAMES and all(i["artifact_id"] and i["uri"] and i["seed"] is not None
                                            for i in frames.values())
    assert not any(s["stage"] == "video_clips" for s in waiting["steps"]), "nothing after the gate ran"
    store = ArtifactStore(mesh_settings.home)
    sheet = store.get(view["contact_sheet_artifact_id"])
    assert sheet.artifact_type == "contact_sheet" and sheet.stage == "base_images"
    with Image.open(store.path_for(sheet.uri)) as image:
        assert image.format == "PNG" and image.width >= 4 * 256 and image.height > 160

    # The refusals: unknown run, unknown item, a seed out of range, an edit the plan validators refuse.
    assert production.post("/runs/run_nosuch/review", json={"approve": True}).status_code == 404
    assert review(production, run_id, {"regenerate": [{"item": "frame_999"}]}, 422)["error"]["field"] == \
        "regenerate[0].item"
    assert review(production, run_id, {"regenerate": [{"item": "shot_002"}]}, 422)["error"]["field"] == \
        "regenerate[0].item", "a clip is not reviewable at the keyframes gate"
    assert "seed" in review(production, run_id, {"regenerate": [{"item": "frame_002", "seed": 2**32}]},
                            422)["error"]["field"]
    bad = review(production, run_id, {"regenerate": [{"item": "frame_004", "prompt": "   "}]}, 422)["error"]
    assert bad["code"] == "plan_invalid" and bad["field"] == "base_images[4].prompt", bad
    review(production, run_id, {"approve": True, "regenerate": [{"item": "frame_002"}]}, 422)

    # Re-roll frame_002, edit frame_004's prompt: only those two keyframes are rendered again.
    before = len(production.get("/status", params={"run_id": run_id}).json()["steps"])
    new_prompt = "Wide rooftop at dawn, a single red umbrella left behind"
    review(production, run_id, {"regenerate": [{"item": "frame_002"}, {"item": "frame_004", "prompt": new_prompt}]})
    again = wait_for_status(production, run_id, ENDED, timeout=900,
                            predicate=lambda s: len(s["steps"]) > before)
    assert again["status"] == "awaiting_review" and again["review"]["gate"] == "keyframes", again["error"]
    rendered = {item for stage, item in executed(again, before) if stage == "base_images"}
    assert rendered == {"frame_002", "frame_002.qa", "frame_004", "frame_004.qa", "contact_sheet"}, rendered
    assert {s["stage"] for s in again["steps"][before:] if s["status"] == "succeeded"} <= {"base_images",
                                                                                          "plan_intake"}
    view = again["review"]
    items = {i["item"]: i for i in view["items"]}
    assert view["plan_revision"] == 1 and items["frame_004"]["prompt"] == new_prompt
    assert items["frame_002"]["seed"] != frames["frame_002"]["seed"]
    assert items["frame_002"]["artifact_id"] != frames["frame_002"]["artifact_id"]
    assert items["frame_000"]["artifact_id"] == frames["frame_000"]["artifact_id"]
    assert view["contact_sheet_artifact_id"] != sheet.artifact_id
    revision = next(m for m in store.list(run_id, stage="plan_intake") if m.artifact_type == "movie_plan_revision")
    assert revision.metadata["revision"] == 1 and revision.metadata["previous_uri"]
    assert store.get(revision.metadata["previous_uri"]).artifact_id != revision.artifact_id, "history kept"

    # production_agent dies while the run waits; the restarted one still has it waiting, and approves it.
    old_pid = mesh.read_state(mesh_settings)["services"]["production_agent"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "production_agent did not come back"
        try:
            if production.get("/health").status_code == 200 and \
                    mesh.read_state(mesh_settings)["services"]["production_agent"]["pid"] != old_pid:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    after_restart = production.get("/status", params={"run_id": run_id}).json()
    assert after_restart["status"] == "awaiting_review" and after_restart["review"]["gate"] == "keyframes"
    review(production, run_id, {"approve": True})
    done = wait_for_status(production, run_id, {"succeeded", "failed", "awaiting_review"}, timeout=900)
    assert done["status"] == "succeeded", done["error"]
    assert review(production, run_id, {"approve": True}, 409)["error"]["code"] == "not_awaiting_review"
    film = production.get("/artifacts", params={"run_id": run_id, "stage": "finalize"}).json()
    assert any(a["artifact_type"] == "video_final" for a in film["artifacts"])
    # Over the whole run: the re-rolled and the edited keyframe twice, every other one and every clip once
    # (each pass through the gate replayed the rest from the cache).
    counts = executed(done)
    assert {f: counts[("base_images", f)] for f in FRAMES} == {"frame_000": 1, "frame_001": 1, "frame_002": 2,
                                                               "frame_003": 1, "frame_004": 2}
    assert [counts[("video_clips", f"shot_{n:03d}")] for n in range(1, 5)] == [1, 1, 1, 1]


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sparkle_motion.cli", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=900)


def test_cli_make_asks_at_the_gate_and_review_scripts_it(mesh_settings, tmp_path):
    env = mesh_env(mesh_settings.home, mesh_settings.profile_path)
    out = tmp_path / "film.mp4"
    new_prompt = "A lighthouse at dawn over a calm sea"
    made = cli("make", "A lighthouse keeper befriends a storm at night", "-o", str(out), "--shots", "2",
               "--duration", "4", "--seed", "3", "--review", "keyframes", "--prompt", new_prompt,
               env=env, stdin="r 2\nr 99\ne 3\na\n")
    assert made.returncode == 0, made.stdout + made.stderr
    # asked at the gate, again after 'r 99' (refused, no request sent), after the re-roll, after the edit
    assert made.stdout.count("awaits review at gate keyframes") == 4, made.stdout
    assert "no item '99'" in made.stderr
    sheets = re.findall(r"^contact sheet: (.+)$", made.stdout, flags=re.M)
    assert len(sheets) == 4 and len(set(sheets)) == 3 and all(Path(p).is_file() for p in sheets)
    assert "plan revision 1" in made.stdout and out.is_file() and f"film: {out.resolve()}" in made.stdout
    run_id = re.search(r"run (run_\w+) started", made.stdout).group(1)

    refused = cli("review", run_id, "--approve", env=env)
    assert refused.returncode == 2 and "not awaiting review" in refused.stderr, refused.stderr
    assert cli("review", run_id, "--regenerate", "frame_001:x", env=env).returncode == 2
    assert cli("review", run_id, env=env).returncode == 2
    again = cli("review", run_id, "--regenerate", "frame_001:77", "--wait", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    new_run, status = re.search(r"run (run_\w+): (\w+)", again.stdout).groups()
    assert new_run != run_id and status == "succeeded"
    steps = RunRegistry(mesh_settings.db_path).list_steps(new_run)
    assert {(s.stage, s.item) for s in steps if s.status == "succeeded" and s.stage == "base_images"} == \
        {("base_images", "frame_001"), ("base_images", "frame_001.qa"), ("base_images", "contact_sheet")}


def test_notebook_gallery_rerolls_edits_and_approves(mesh_settings):
    from sparkle_motion.agents.production_client import ProductionClient
    from sparkle_motion.notebook.review_gallery import ReviewGallery

    with ProductionClient(mesh_settings) as client:
        run_id = client.start(plan=plan_with_seed(2), review=["keyframes"]).run_id
        gallery = ReviewGallery(client, run_id, mesh_settings.home)
        assert gallery.wait_for_gate(900).status == "awaiting_review"
        # the keyframes, and the cast portraits they were drawn from
        assert sorted(gallery.reroll_buttons) == PORTRAITS + FRAMES and not gallery.approve_button.disabled

        def picture(item: str) -> bytes:
            order = [i.item for i in gallery.status.review.items]
            return gallery.cards.children[order.index(item)].children[1].value

        before, untouched = picture("frame_001"), picture("frame_000")
        gallery.reroll_buttons["frame_001"].click()
        assert "regenerating frame_001" in gallery.message.value
        gallery.wait_for_gate(900)
        assert picture("frame_001") != before and picture("frame_000") == untouched

        gallery.prompts["frame_003"].value = "   "
        gallery.edit_buttons["frame_003"].click()
        assert "base_images[3].prompt" in gallery.message.value   # refused, the field named
        gallery.prompts["frame_003"].value = "Close on Miko laughing under a yellow umbrella"
        gallery.edit_buttons["frame_003"].click()
        status = gallery.wait_for_gate(900)
        assert status.review.plan_revision == 1
        assert gallery.prompts["frame_003"].value == "Close on Miko laughing under a yellow umbrella"

        # The control panel shows the same gallery under the status of a run that waits at a gate.
        from sparkle_motion.notebook import ControlPanel

        panel = ControlPanel(mesh_settings, auto_poll=False)
        try:
            panel.run_id = run_id
            assert panel.refresh_status()["status"] == "awaiting_review"
            assert panel.review_gallery.widget in panel.status_section.children
            assert sorted(panel.review_gallery.reroll_buttons) == PORTRAITS + FRAMES
        finally:
            panel.close()

        gallery.approve_button.click()
        assert gallery.wait_for_gate(900).status == "succeeded"
        assert gallery.approve_button.disabled and not gallery.cards.children


def test_plan_gate_then_the_cast_gate_then_the_clips_gate(production):
    run_id = start(production, plan_with_seed(3), review=["plan", "cast", "clips"])
    at_plan = wait_for_status(production, run_id, ENDED, timeout=900)
    assert at_plan["status"] == "awaiting_review" and at_plan["review"]["gate"] == "plan", at_plan["error"]
    assert {s["stage"] for s in at_plan["steps"]} == {"plan_intake"}
    assert {i["item"] for i in at_plan["review"]["items"]} == \
        set(FRAMES) | set(PORTRAITS) | {f"shot_00{n}" for n in range(1, 5)}
    assert all(i["artifact_id"] is None for i in at_plan["review"]["items"])
    review(production, run_id, {"approve": True})
    # the portraits: the cast gate offers them (and nothing rendered later), with the sheet of the cast
    at_cast = wait_for_status(production, run_id, ENDED, timeout=900,
                              predicate=lambda s: s["review"] is None or s["review"]["gate"] != "plan")
    assert at_cast["status"] == "awaiting_review" and at_cast["review"]["gate"] == "cast", at_cast["error"]
    portraits = {i["item"]: i for i in at_cast["review"]["items"]}
    assert sorted(portraits) == PORTRAITS and all(i["artifact_id"] and i["uri"] for i in portraits.values())
    assert at_cast["review"]["contact_sheet_artifact_id"]
    assert not any(s["stage"] in ("base_images", "video_clips") for s in at_cast["steps"])
    review(production, run_id, {"approve": True})
    at_clips = wait_for_status(production, run_id, ENDED, timeout=900,
                               predicate=lambda s: s["review"] is None or s["review"]["gate"] != "cast")
    assert at_clips["status"] == "awaiting_review" and at_clips["review"]["gate"] == "clips", at_clips["error"]
    shots = {i["item"]: i for i in at_clips["review"]["items"] if i["stage"] == "video_clips"}
    assert len(shots) == 4 and all(i["artifact_id"] and i["seed"] is not None for i in shots.values())
    assert not any(s["stage"] == "lipsync" for s in at_clips["steps"])
    before = len(at_clips["steps"])
    review(production, run_id, {"regenerate": [{"item": "frame_001", "seed": 4321}]})
    again = wait_for_status(production, run_id, ENDED, timeout=900, predicate=lambda s: len(s["steps"]) > before)
    assert again["status"] == "awaiting_review" and again["review"]["gate"] == "clips"
    assert set(executed(again, before)) == {("base_images", "frame_001"), ("base_images", "frame_001.qa"),
                                            ("base_images", "contact_sheet"),
                                            ("video_clips", "shot_001"), ("video_clips", "shot_001.qa"),
                                            ("video_clips", "shot_002"), ("video_clips", "shot_002.qa")}
    review(production, run_id, {"approve": True})
    done = wait_for_status(production, run_id, ENDED, timeout=900,
                           predicate=lambda s: s["status"] != "awaiting_review")
    assert done["status"] == "succeeded", done["error"]

    # After the film, one clip: a new run redoes that clip (and its QA), assembly, final QA and the film only.
    accepted = review(production, run_id, {"regenerate": [{"item": "shot_004", "seed": 99}]})
    rerun = wait_for_status(production, accepted["run_id"], {"succeeded", "failed"}, timeout=900)
    assert rerun["status"] == "succeeded", rerun["error"]
    assert executed(rerun) == Counter({("video_clips", "shot_004"): 1, ("video_clips", "shot_004.qa"): 1,
                                       ("assemble", None): 1, ("qa_publish", "final.qa"): 1, ("finalize", None): 1})

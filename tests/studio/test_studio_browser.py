"""The studio in a real headless Chromium against a real mesh (cpu profile): a 2-shot film from the New film
page, stopped at the storyboard gate, one keyframe re-rolled, approved, watched and downloaded."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest
from browser import chromium, screenshot
from mesh_harness import running_mesh
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("studio_mesh")]

IDEA = "Two friends on a neon rooftop reconcile before sunrise."
FILM_TIMEOUT_S = 900
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("studio-mesh")
    with running_mesh(home, render={"fps": 12, "width": 192, "height": 112}) as settings:
        yield settings


@pytest.fixture(scope="module")
def api(mesh_settings):
    with httpx.Client(base_url=mesh_settings.url_for("production_agent"), timeout=60) as client:
        yield client


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def watch_progress(page, until: set[str], timeout_s: float) -> list[int]:
    """The Production tab's progress (percent) as it changes, until the run's status is in ``until``."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = page.locator("#run-progress").text_content(timeout=UI_TIMEOUT_MS) or "0%"
        value = int(text.rstrip("%"))
        if not seen or seen[-1] != value:
            seen.append(value)
        status = page.locator("#run-status").text_content(timeout=UI_TIMEOUT_MS)
        if status in until:
            return seen
        if status in ("failed", "stopped", "interrupted"):
            raise AssertionError(f"the run ended {status}: {page.locator('#run-head').inner_text()}")
        time.sleep(0.3)
    raise AssertionError(f"the run did not reach {until} in {timeout_s} s; progress seen {seen}")


def test_a_film_from_the_new_film_page_through_the_storyboard_gate_to_the_player(mesh_settings, api, tmp_path):
    url = mesh_settings.url_for("production_agent")
    with chromium() as browser:
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")

        # New film → a plan from script_agent, shown in the editor.
        page.fill("#idea", IDEA)
        page.fill("#shots", "2")
        page.fill("#duration", "6")
        page.fill("#seed", "7")
        photo = tmp_path / "cast_photo.png"
        Image.new("RGB", (64, 96), (30, 140, 200)).save(photo)
        page.set_input_files("#cast-photos", str(photo))
        screenshot(page, tmp_path, "1_new_film")
        page.click("#write-plan")
        page.wait_for_selector("#plan-form", timeout=UI_TIMEOUT_MS)
        page.wait_for_function("document.querySelector('#plan-state').textContent === 'plan is valid'",
                               timeout=UI_TIMEOUT_MS)
        assert page.locator("#plan-form [data-path^='shots[']").count() >= 2
        # The cast photo went through the artifact face and is the first character's reference image.
        reference_id = page.evaluate("import('/studio/static/js/state.js').then(m => m.state.plan.characters[0]"
                                     ".reference_image_id)")
        reference = api.get(f"/artifacts/{reference_id}/manifest").json()
        assert (reference["run_id"], reference["artifact_type"]) == ("uploads", "reference_image")
        assert reference["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()

        # A broken field gets its validator message next to it; fixing it clears the message.
        duration = page.locator("input[data-path='shots[0].duration_sec']")
        good = duration.input_value()
        duration.fill("-1")
        message = page.locator(".field[data-path='shots[0].duration_sec'] .field-error")
        message.wait_for(timeout=UI_TIMEOUT_MS)
        assert message.text_content()
        screenshot(page, tmp_path, "2_plan_with_error")
        duration.fill(good)
        page.wait_for_function("document.querySelector('#plan-state').textContent === 'plan is valid'",
                               timeout=UI_TIMEOUT_MS)
        screenshot(page, tmp_path, "3_plan")

        # Start with the keyframes gate (checked by default); the Production tab shows the run.
        assert page.locator("input.review-gate[value='keyframes']").is_checked()
        page.click("#start-production")
        started = time.monotonic()
        page.wait_for_selector("#run-status", timeout=UI_TIMEOUT_MS)
        run_id = page.locator("#current-run").text_content().removeprefix("run ")
        before_gate = watch_progress(page, {"awaiting_review"}, FILM_TIMEOUT_S)
        to_gate_s = time.monotonic() - started
        screenshot(page, tmp_path, "4_production_at_gate")
        assert page.locator("#stages [data-stage='base_images'] .chip").count() >= 2

        # Storyboard: re-roll one keyframe, see its image change, approve.
        page.click("#open-review")
        cards = page.locator("#review-items .review-item")
        cards.first.wait_for(timeout=UI_TIMEOUT_MS)
        assert cards.count() >= 2
        page.wait_for_function("[...document.querySelectorAll('#review-items img')].every(i => i.complete && "
                               "i.naturalWidth > 0)", timeout=UI_TIMEOUT_MS)
        screenshot(page, tmp_path, "5_storyboard")
        keyframes = page.locator("#review-items .review-item:has(img)")
        assert keyframes.count() >= 3  # a 2-shot film has three keyframes
        target = keyframes.last
        item = target.get_attribute("data-item")
        old_id = target.get_attribute("data-artifact-id")
        old_pixels = image_digest(page, item)
        target.locator("button.reroll").click()
        rerolled = time.monotonic()
        card = page.locator(f"#review-items .review-item[data-item='{item}']")
        wait_for(lambda: card.count() == 1 and card.get_attribute("data-artifact-id") not in (None, "", old_id),
                 FILM_TIMEOUT_S, f"a new image for {item}", every_s=0.5)
        page.wait_for_function("[...document.querySelectorAll('#review-items img')].every(i => i.complete && "
                               "i.naturalWidth > 0)", timeout=UI_TIMEOUT_MS)
        reroll_s = time.monotonic() - rerolled
        new_id = card.get_attribute("data-artifact-id")
        assert image_digest(page, item) != old_pixels, "the re-rolled keyframe shows the same pixels"
        old_sha = api.get(f"/artifacts/{old_id}/manifest").json()["sha256"]
        assert api.get(f"/artifacts/{new_id}/manifest").json()["sha256"] != old_sha
        screenshot(page, tmp_path, "6_storyboard_rerolled")
        page.click("#approve")
        approved = time.monotonic()

        # Production again: the progress moves on to the end.
        page.click("#tabs button[data-tab='production']")
        after_gate = watch_progress(page, {"succeeded"}, FILM_TIMEOUT_S)
        print(f"studio timings (cpu mesh, 2 shots): start→keyframes gate {to_gate_s:.1f} s, re-roll of {item} "
              f"{reroll_s:.1f} s, approve→film {time.monotonic() - approved:.1f} s")
        progress = before_gate + after_gate
        assert progress[-1] == 100 and len(set(progress)) >= 3, progress
        assert all(b >= a for a, b in zip(after_gate, after_gate[1:])), after_gate
        page.locator("#previews video").first.wait_for(timeout=UI_TIMEOUT_MS)
        screenshot(page, tmp_path, "7_production_done")

        # Final: the film plays, with its subtitle track; the mp4 downloads intact.
        page.click("#open-final")
        video = page.locator("video#film")
        video.wait_for(timeout=UI_TIMEOUT_MS)
        can_play = page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001F, mp4a.40.2\"')")
        assert can_play in ("probably", "maybe"), f"this chromium cannot play H.264/AAC: {can_play!r}"
        page.wait_for_function("document.querySelector('video#film').readyState >= 2", timeout=UI_TIMEOUT_MS)
        page.evaluate("(() => { const v = document.querySelector('video#film'); v.muted = true; return v.play(); })()")
        start = page.evaluate("document.querySelector('video#film').currentTime")
        page.wait_for_function(f"document.querySelector('video#film').currentTime > {start} + 0.3",
                               timeout=UI_TIMEOUT_MS)
        dialogue = [e for e in plan_of(api, run_id)["dialogue_timeline"] if e["type"] == "dialogue"]
        page.evaluate("document.querySelector('video#film').textTracks[0].mode = 'showing'")
        page.wait_for_function("(document.querySelector('video#film').textTracks[0].cues || []).length === "
                               f"{len(dialogue)}", timeout=UI_TIMEOUT_MS)
        assert dialogue, "the plan has no dialogue, so the subtitle track is not exercised"
        verdict = page.locator("#qa-verdict").text_content()
        assert verdict in ("pass", "warn"), verdict
        screenshot(page, tmp_path, "8_final")
        with page.expect_download(timeout=UI_TIMEOUT_MS) as info:
            page.click("#download-mp4")
        saved = Path(info.value.path())
        film = next(a for a in api.get("/artifacts", params={"run_id": run_id}).json()["artifacts"]
                    if a["artifact_type"] == "video_final")
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == film["sha256"]
        assert info.value.suggested_filename.endswith(".mp4")
        artifacts = api.get("/artifacts", params={"run_id": run_id}).json()["artifacts"]
        for button, stage, kind, suffix in (("#download-srt", "assemble", "subtitles", ".srt"),
                                            ("#download-qa", "qa_publish", "qa_report", ".json")):
            with page.expect_download(timeout=UI_TIMEOUT_MS) as info:
                page.click(button)
            wanted = [a for a in artifacts if (a["stage"], a["artifact_type"]) == (stage, kind)][-1]
            assert hashlib.sha256(Path(info.value.path()).read_bytes()).hexdigest() == wanted["sha256"], kind
            assert info.value.suggested_filename.endswith(suffix)

        # Runs: the film's run is listed.
        page.click("#tabs button[data-tab='runs']")
        page.locator(f"tr[data-run-id='{run_id}']").wait_for(timeout=UI_TIMEOUT_MS)
        screenshot(page, tmp_path, "9_runs")
        assert errors == [], errors
    assert api.get("/status", params={"run_id": run_id}).json()["status"] == "succeeded"


def plan_of(api, run_id: str) -> dict:
    """The plan the run produced (its last plan revision), read through the artifact face."""
    artifacts = api.get("/artifacts", params={"run_id": run_id}).json()["artifacts"]
    plan = [a for a in artifacts if a["artifact_type"] in ("movie_plan", "movie_plan_request")][-1]
    body = api.get(f"/artifacts/{plan['artifact_id']}/content").json()
    return body.get("validated_plan", body.get("plan", body))


def image_digest(page, item: str) -> str:
    """A digest of the pixels the page shows for ``item`` (drawn onto a canvas)."""
    return page.evaluate("""item => {
        const img = document.querySelector(`#review-items .review-item[data-item='${item}'] img`);
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return canvas.toDataURL('image/png');
    }""", item)


def test_the_runs_page_cancels_a_run_waiting_at_its_gate_and_resumes_it(mesh_settings, api, tmp_path):
    planned = api.post("/studio/plan", json={"prompt": "A lighthouse keeper waves at a passing ship.", "shots": 2,
                                             "duration_s": 5.0, "seed": 11}, timeout=300)
    assert planned.status_code == 200, planned.text
    started = api.post("/invoke", json={"plan_uri": planned.json()["plan_uri"], "review": ["keyframes"]})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    wait_for(lambda: api.get("/status", params={"run_id": run_id}).json()["status"] == "awaiting_review",
             FILM_TIMEOUT_S, f"{run_id} at its gate", every_s=0.5)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(mesh_settings.url_for("production_agent") + "/#runs")
        row = page.locator(f"tr[data-run-id='{run_id}']")
        row.wait_for(timeout=UI_TIMEOUT_MS)
        assert row.locator(".status").text_content() == "awaiting_review"
        screenshot(page, tmp_path, "runs_at_gate")
        row.locator("button.cancel").click()
        page.wait_for_function(f"document.querySelector(\"tr[data-run-id='{run_id}'] .status\").textContent "
                               "=== 'stopped'", timeout=UI_TIMEOUT_MS)
        assert api.get("/status", params={"run_id": run_id}).json()["status"] == "stopped"
        row.locator("button.resume").click()
        page.wait_for_function("document.querySelector('#notice').textContent.startsWith('resumed as ')",
                               timeout=UI_TIMEOUT_MS)
        resumed = page.locator("#notice").text_content().removeprefix("resumed as ").strip()
        assert resumed != run_id
        page.locator(f"tr[data-run-id='{resumed}']").wait_for(timeout=UI_TIMEOUT_MS)
        screenshot(page, tmp_path, "runs_resumed")
        wait_for(lambda: api.get("/status", params={"run_id": resumed}).json()["status"] in
                 ("succeeded", "awaiting_review"), FILM_TIMEOUT_S, f"the resumed run {resumed} to move on",
                 every_s=0.5)

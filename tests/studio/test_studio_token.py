"""With SPARKLE_TOKEN set: the studio asks for the token, sends it as a bearer header, and shows media through
blob: URLs (an <img>/<video> src cannot carry the header)."""

from __future__ import annotations

import io

import pytest
from browser import chromium, screenshot
from PIL import Image

from sparkle_motion.artifacts import ArtifactStore
from sparkle_motion.runs import RunRegistry
from sparkle_motion.testing import running_tool, write_test_profile

pytestmark = [pytest.mark.slow]

TOKEN = "studio-browser-token"


def test_the_page_asks_for_the_token_and_uses_it_for_the_api_and_media(tmp_path):
    home = tmp_path / "home"
    profile = write_test_profile(home)
    png = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 90)).save(png, format="PNG")
    store = ArtifactStore(home)
    registry = RunRegistry(home / "sparkle.db")
    try:
        image = store.put("run_tokened", "base_images", "image", png.getvalue(), "image/png", ext=".png")
        registry.create_run(run_id="run_tokened", plan_id="plan_tokened", mode="run")
    finally:
        store.close()
    with running_tool("production_agent", home=home, env={"SPARKLE_PROFILE": str(profile), "SPARKLE_TOKEN": TOKEN},
                      ready_timeout=120) as agent, chromium() as browser:
        page = browser.new_page()
        page.goto(agent.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#tabs button[data-tab='runs']")
        dialog = page.locator("#token-dialog")
        dialog.wait_for(state="visible", timeout=30_000)
        screenshot(page, tmp_path, "token_prompt")
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.locator("tr[data-run-id='run_tokened']").wait_for(timeout=30_000)
        width = page.evaluate("""async id => {
            const api = await import('/studio/static/js/api.js');
            const url = await api.mediaUrl(api.contentPath(id));
            if (!url.startsWith('blob:')) throw new Error('with a token, media must come as blob: URLs, got ' + url);
            const img = new Image();
            img.src = url;
            await img.decode();
            return img.naturalWidth;
        }""", image.artifact_id)
        assert width == 48
        assert page.evaluate("sessionStorage.getItem('sparkle.token')") == TOKEN

"""Debian's chromium driven by Playwright's Python API (no browser download), and the screenshots it takes.

``scripts/install_chromium.sh`` (called by ``.ci/run`` and ``scripts/setup.sh full``) puts chromium on a clean
machine; the tests find it on PATH.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from playwright.sync_api import Browser, Page, sync_playwright

#: Where the screenshots are also copied, for a person to look at after the run.
SHOTS_COPY_DIR = Path("/tmp/studio_shots")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("chromium is not installed: run scripts/install_chromium.sh (Debian's chromium package)")
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=["--autoplay-policy=no-user-gesture-required"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, out_dir: Path, name: str) -> Path:
    """A full-page PNG under ``out_dir`` (the test's output directory), copied to SHOTS_COPY_DIR."""
    path = out_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS_COPY_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, SHOTS_COPY_DIR / path.name)
    return path

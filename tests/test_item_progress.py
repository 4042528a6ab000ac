"""Items in flight: the summary line /status, the CLI and the notebook show for a tool job's progress."""

from __future__ import annotations

import io
import threading

from rich.console import Console
from rich.progress import Progress

from sparkle_motion.agents.item_progress import InFlightItems, format_eta, summarize
from sparkle_motion.agents.production_models import ItemProgress, RunStatus
from sparkle_motion.cli import _ItemRows
from sparkle_motion.notebook.panel_views import status_html


def test_eta_reads_like_a_clock():
    assert [format_eta(s) for s in (0, 12.4, 59.6, 250, 3725)] == ["0s", "12s", "1m00s", "4m10s", "1h02m"]


def test_summary_line():
    item = ItemProgress(stage="video_clips", item="shot_002", step=31, total=50, eta_s=250)
    assert summarize(item) == "video_clips shot_002: step 31/50, eta 4m10s"
    assert summarize(ItemProgress(stage="assemble", state="running")) == "assemble: running"
    assert summarize(ItemProgress(stage="dialogue_audio", item="line_001", step=3)) == "dialogue_audio line_001: step 3"


def test_job_views_land_on_the_item_of_the_reporting_thread():
    table = InFlightItems()
    entered, release = threading.Event(), threading.Event()

    def other_item() -> None:
        with table.working_on("base_images", "frame_001", "images_sdxl"):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=other_item)
    worker.start()
    entered.wait(10)
    with table.working_on("video_clips", "shot_002", "videos_wan"):
        table.on_job_view({"job_id": "job_0123456789ab", "state": "running",
                           "progress": {"step": 31, "total": 50, "phase": "full", "eta_s": 250.0}})
        items = {(i.stage, i.item): i for i in table.snapshot()}
        assert items[("video_clips", "shot_002")].summary == "video_clips shot_002: step 31/50, eta 4m10s"
        assert items[("video_clips", "shot_002")].job_id == "job_0123456789ab"
        assert items[("base_images", "frame_001")].step is None    # the other thread's item is untouched
    release.set()
    worker.join(10)
    assert table.snapshot() == []
    table.on_job_view({"progress": {"step": 1}})                   # a view outside any item is ignored


def test_notebook_and_cli_show_the_item_line():
    item = ItemProgress(stage="video_clips", item="shot_002", tool_id="videos_wan", step=31, total=50, eta_s=250,
                        summary="video_clips shot_002: step 31/50, eta 4m10s")
    status = RunStatus(run_id="run_x", status="running", items=[item])
    page = status_html(status)
    assert "video_clips shot_002: step 31/50, eta 4m10s" in page and "<progress value='31' max='50'" in page

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with Progress(console=console) as progress:
        rows = _ItemRows(progress)
        rows.update([item])
        rows.update([item.model_copy(update={"step": 32, "summary": "video_clips shot_002: step 32/50"})])
    lines = [line for line in out.getvalue().splitlines() if "shot_002" in line]
    # without a terminal: the first report printed at once, the next one held back (throttled)
    assert lines == ["  video_clips shot_002: step 31/50, eta 4m10s"]

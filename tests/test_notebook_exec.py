"""CI runs notebooks/sparkle_motion.ipynb headless (nbclient + ipykernel) on the cpu profile.

The notebook starts its own mesh, generates a 2-shot plan, edits it, runs production, pauses and
resumes it, shows the artifacts and the final video, and lists runs to prune. Any cell that raises
fails the test; the saved widget state must hold the final video, which is decoded with PyAV.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import av
import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from mesh_harness import write_test_profile
from nbclient import NotebookClient

from sparkle_motion import mesh
from sparkle_motion.config import load_settings, project_path
from sparkle_motion.runs import RunRegistry

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("notebook")]

NOTEBOOK = project_path("notebooks/sparkle_motion.ipynb")
KERNEL = "sparkle-motion-test"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def kernel_for_this_python(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec whose argv is this interpreter (the project's venv), visible only to this test.

    The default 'python3' spec runs whatever ``python`` is first on PATH.
    """
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share/jupyter"))
    install_kernelspec(kernel_name=KERNEL, display_name="sparkle-motion (test)", prefix=str(prefix))
    spec = json.loads((prefix / "share/jupyter/kernels" / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return KERNEL


def inject_parameters(nb: nbformat.NotebookNode, **values: object) -> None:
    """Papermill's convention: a cell after the one tagged 'parameters' overrides its constants."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def find_models(state: dict, root_id: str) -> dict[str, dict]:
    """Every widget model reachable from ``root_id`` through children (IPY_MODEL_ references)."""
    seen: dict[str, dict] = {}
    stack = [root_id]
    while stack:
        model_id = stack.pop()
        if model_id in seen or model_id not in state:
            continue
        seen[model_id] = state[model_id]
        for ref in state[model_id]["state"].get("children", []):
            stack.append(ref.removeprefix("IPY_MODEL_"))
    return seen


def cell_output_text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_notebook_makes_a_film_headless(tmp_path, monkeypatch):
    home = tmp_path / "home"
    profile = write_test_profile(home, render={"fps": 12, "width": 192, "height": 112})
    settings = load_settings({"SPARKLE_HOME": str(home), "SPARKLE_PROFILE": str(profile)})
    workdir = tmp_path / "work"
    workdir.mkdir()
    for key in [k for k in os.environ if k.startswith("SPARKLE_")]:
        monkeypatch.delenv(key)  # the kernel inherits this environment; the notebook sets its own

    nb = nbformat.read(NOTEBOOK, as_version=4)
    inject_parameters(nb, HEADLESS=True, IDEA="two friends on a neon rooftop reconcile", TITLE="", SHOTS=2,
                      DURATION_S=4.0, SEED="7", MODE="run", QA_MODE="full", SPARKLE_HOME=str(home),
                      SPARKLE_PROFILE=str(profile), RETENTION_DAYS=30, STOP_MESH_AT_END=True, TIMEOUT_S=240)
    client = NotebookClient(nb, kernel_name=kernel_for_this_python(tmp_path / "kernel", monkeypatch),
                            timeout=300, startup_timeout=120, resources={"metadata": {"path": str(workdir)}},
                            store_widget_state=True)
    try:
        client.execute()  # CellExecutionError (with the cell's traceback) if any cell raises
    finally:
        mesh.down(settings)  # whatever the notebook managed to do
        nbformat.write(nb, tmp_path / "executed.ipynb")  # evidence, kept with pytest's tmp dirs
    assert mesh.read_state(settings) is None, "the last cell stops the mesh"

    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    final_cell = next(c for c in nb.cells if "panel.final_section" in c.source)
    view = next(o for o in final_cell.outputs if o.get("output_type") == "execute_result")
    models = find_models(state, view["data"][WIDGET_VIEW]["model_id"])
    videos = [m for m in models.values() if m["model_name"] == "VideoModel"]
    assert len(videos) == 1, "the final-video cell shows exactly one video"
    (buffer,) = [b for b in videos[0].get("buffers", []) if b["path"] == ["value"]]
    film = base64.b64decode(buffer["data"])
    with av.open(io.BytesIO(film)) as container:
        streams = {s.type: s.codec_context.name for s in container.streams}
        assert streams.items() >= {"video": "h264", "audio": "aac"}.items(), streams
        assert abs(float(container.duration / av.time_base) - 4.0) < 0.3
    info = next(m for m in models.values() if m["model_name"] == "HTMLModel" and
                "Final video" in m["state"].get("value", ""))
    run_id = info["state"]["value"].split("<code>")[1].split("</code>")[0]

    # The run really was paused and resumed, and it is the film on disk.
    registry = RunRegistry(settings.db_path)
    try:
        run = registry.get_run(run_id)
        messages = [e.message for e in registry.log_tail(run_id, 200)]
    finally:
        registry.close()
    assert run.status == "succeeded" and run.qa_mode == "full"
    assert "pause requested" in messages and "resume requested" in messages
    final_file = next(home.glob(f"artifacts/{run_id}/finalize/video_final_*.mp4"))
    assert final_file.read_bytes() == film

    outputs = "\n".join(cell_output_text(c) for c in nb.cells if c.cell_type == "code")
    assert "paused at stage" in outputs and "resumed" in outputs and f"run {run_id} succeeded" in outputs
    assert "edited base_images[2].prompt" in outputs
    assert "mesh stopped" in outputs and "dry run" in outputs
    assert "[OK  ] ffmpeg" in outputs  # preflight printed its report

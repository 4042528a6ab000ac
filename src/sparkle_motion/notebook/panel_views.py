"""HTML the control panel shows for a run: its status, its failure, its QA badge and its final film.

Pure functions of production_agent's answers (``RunStatus``, an artifact entry),
so what the panel says about a run can be read and tested apart from the widgets.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sparkle_motion.agents.production_client import ACTIVE_STATUSES, FINAL_FILM_TYPE
from sparkle_motion.agents.production_models import RunStatus

__all__ = ["STATUS_COLORS", "alert_html", "artifacts_summary_html", "failed_stage", "final_info_html", "link_html",
           "items_html", "missing_final_html", "missing_final_reason", "qa_badge_html", "status_html"]

STATUS_COLORS = {"pending": "#6b7280", "running": "#1d4ed8", "paused": "#b45309", "succeeded": "#15803d",
                 "failed": "#b91c1c", "stopped": "#7f1d1d", "interrupted": "#b91c1c"}


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f} s"


def failed_stage(status: RunStatus) -> str:
    """The stage a run ended or stands in: its error's stage, else its current stage."""
    return (status.error or {}).get("stage") or status.current_stage or "?"


def status_html(status: RunStatus) -> str:
    """The run's state, progress and modes, its last 30 steps and its last 8 log lines."""
    state = status.status
    color = STATUS_COLORS.get(state, "#374151")
    head = (f"<b>run</b> <code>{html.escape(status.run_id)}</code> "
            f"<span style='background:{color};color:white;padding:1px 8px;border-radius:4px'>"
            f"{html.escape(state)}</span> stage <b>{html.escape(str(status.current_stage or '—'))}</b> · "
            f"{100 * float(status.progress or 0):.0f}% · mode {html.escape(str(status.mode))} · "
            f"QA {html.escape(str(status.qa_mode))}")
    rows = "".join(
        f"<tr><td>{html.escape(s.stage)}</td><td>{html.escape(str(s.item or ''))}</td>"
        f"<td>{s.attempt}</td><td style='color:{STATUS_COLORS.get(s.status, '#374151')}'>"
        f"{html.escape(s.status)}</td>"
        f"<td>{_seconds(s.duration_s)}</td></tr>"
        for s in status.steps[-30:])
    table = (f"<table><tr><th>stage</th><th>shot</th><th>try</th><th>status</th><th>time</th></tr>{rows}</table>"
             if rows else "")
    lines = "\n".join(f"{e.get('level', '')[:4]:4} {e.get('message', '')}" for e in status.log_tail[-8:])
    logs = f"<pre style='font-size:85%;max-height:10em;overflow:auto'>{html.escape(lines)}</pre>" if lines else ""
    return f"<div>{head}</div>{items_html(status)}{table}{logs}"


def items_html(status: RunStatus) -> str:
    """The work in flight, one line each with a bar when its tool job reports steps
    (e.g. ``video_clips shot_002: step 31/50, eta 4m10s``); "" when nothing runs."""
    rows = []
    for item in status.items:
        bar = (f"<progress value='{item.step}' max='{item.total}' style='width:12em'></progress> "
               if item.step is not None and item.total else "")
        rows.append(f"<div class='sm-item'>{bar}{html.escape(item.summary)}</div>")
    return f"<div style='margin:4px 0'>{''.join(rows)}</div>" if rows else ""


def alert_html(status: RunStatus) -> str:
    """The red banner of a failed, stopped or interrupted run ("" for any other state)."""
    state = status.status
    if state not in ("failed", "stopped", "interrupted"):
        return ""
    reason = (status.error or {}).get("message") or {"stopped": "stopped by request",
                                                     "interrupted": "its production_agent exited"}.get(state, "")
    return (f"<div style='background:#fee2e2;color:#7f1d1d;padding:6px;border-radius:4px'>"
            f"<b>Run {html.escape(state)} in {html.escape(failed_stage(status))}</b>: {html.escape(reason)}"
            f" — pick a stage below and press “Resume from stage”.</div>")


def qa_badge_html(run_id: str) -> str:
    return (f"<span style='background:#b45309;color:white;padding:2px 10px;border-radius:4px;"
            f"font-weight:bold'>QA skipped</span> run <code>{html.escape(run_id)}"
            f"</code> was produced with qa_mode=skip: not validated — review it before "
            f"sharing.")


def artifacts_summary_html(run_id: str, stage: str | None, total: int, counts: list[tuple[str, int]]) -> str:
    """One line: how many artifacts the run has, per stage (or in the one stage asked for)."""
    where = f"{' in stage ' + html.escape(stage) if stage else ''}"
    if not total:
        return f"No artifacts for run <code>{html.escape(run_id)}</code>{where} yet."
    return (f"<b>{total}</b> artifact(s) of run <code>{html.escape(run_id)}</code>{where}: "
            + html.escape(", ".join(f"{name} ({count})" for name, count in counts)))


def final_info_html(run_id: str, entry: dict[str, Any], path: Path, size_bytes: int) -> str:
    """The final film's facts (duration, size, checksum), its URI and its file."""
    facts = [f"{entry.get('duration_s') or 0:.2f} s" if entry.get("duration_s") else None,
             f"{entry['width']}×{entry['height']}" if entry.get("width") else None,
             f"{entry.get('size_bytes', size_bytes) / 1e6:.2f} MB", entry.get("checksum")]
    return (f"<b>Final video</b> of run <code>{html.escape(run_id)}</code> · "
            f"{html.escape(' · '.join(f for f in facts if f))}<br>"
            f"<code>{html.escape(entry['uri'])}</code><br><code>{html.escape(str(path))}</code>")


def missing_final_reason(status: RunStatus) -> str:
    """Why a run has no final film: a dry run, still running, failed, stopped, interrupted, or pruned."""
    state, stage = status.status, failed_stage(status)
    if status.mode == "dry":
        return "this was a dry run: it validates and estimates but renders nothing — choose Mode = run"
    if state in ACTIVE_STATUSES:
        return f"the run is still {state} (stage {stage}); finalize has not run yet"
    if state == "failed":
        return f"the run failed in {stage}: {(status.error or {}).get('message', 'no message')}"
    if state == "stopped":
        return f"the run was stopped in {stage} before finalize"
    if state == "interrupted":
        return f"the run was interrupted in {stage} (its production_agent exited)"
    return f"the run succeeded but its {FINAL_FILM_TYPE} artifact is gone (removed by a retention prune?)"


def missing_final_html(status: RunStatus, reason: str) -> str:
    """The missing film's explanation, offering a resume from finalize where one can produce it."""
    offer = "" if status.status in ACTIVE_STATUSES or status.mode == "dry" else \
        ' Press <b>Resume from "finalize"</b> to produce it (earlier steps come from the cache).'
    return (f"<div style='color:#b91c1c'><b>No final video for run "
            f"<code>{html.escape(status.run_id)}</code></b>: {html.escape(reason)}.{offer}</div>")


def link_html(path: Path) -> str:
    """A download link to ``path`` when the notebook server can serve it (under the working directory)."""
    try:
        relative = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return (f"<small>The film is outside the notebook folder ({html.escape(str(path))}); "
                f"“Copy next to notebook” puts a copy you can download here.</small>")
    from IPython.display import FileLink

    return f"Download: {FileLink(str(relative))._repr_html_()}"

"""Many films from one command: ``make --batch ideas.txt`` and ``produce a.json b.json ...``.

Why a module of its own: cli.py stays a thin list of commands. The CLI sends every
film to production_agent at once; production_agent runs ``max_concurrent_runs`` of
them and queues the rest (agents/film_queue.py), so this module only submits, shows
one progress line per film, and copies the finished films out. It does not import
cli.py (cli.py imports it and hands it the plan-writing step).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sparkle_motion.errors import InvalidInputError, SparkleError

__all__ = ["BatchFilm", "MAX_BATCH_FILMS", "read_ideas", "run_batch"]

MAX_BATCH_FILMS = 200
MAX_IDEA_CHARS = 2000
MAX_IDEAS_FILE_BYTES = 1 << 20
ENDED = frozenset({"succeeded", "failed", "stopped", "cancelled"})


def read_ideas(path: Path) -> list[str]:
    """One idea a line; blank lines and ``#`` comments skipped. Any problem is an error naming ``--batch``."""
    try:
        size = path.stat().st_size
        if size > MAX_IDEAS_FILE_BYTES:
            raise InvalidInputError(f"{path} is {size} bytes; the limit is {MAX_IDEAS_FILE_BYTES}", field="--batch")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"file not found: {path}", field="--batch") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder; give a text file with one idea a line",
                                field="--batch") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text", field="--batch") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}", field="--batch") from None
    ideas = []
    for number, line in enumerate(text.splitlines(), start=1):
        idea = line.strip()
        if not idea or idea.startswith("#"):
            continue
        if len(idea) > MAX_IDEA_CHARS:
            raise InvalidInputError(f"line {number} is {len(idea)} characters; the limit is {MAX_IDEA_CHARS}",
                                    field="--batch")
        ideas.append(idea)
    if not ideas:
        raise InvalidInputError(f"{path} has no ideas (one a line; blank lines and # comments are skipped)",
                                field="--batch")
    if len(ideas) > MAX_BATCH_FILMS:
        raise InvalidInputError(f"{path} has {len(ideas)} ideas; one batch takes at most {MAX_BATCH_FILMS}",
                                field="--batch")
    return ideas


@dataclass
class BatchFilm:
    """One film of the batch: its label, how to make its plan, and what became of it."""

    label: str
    request: Callable[[], dict[str, Any]]   # the /invoke body's plan part: {"plan": ...} or {"plan_uri": ...}
    run_id: str | None = None
    status: str = "planning"
    detail: str = ""
    film: Path | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "film"


def _line(film: BatchFilm, state: Any | None) -> str:
    if state is None:
        return film.detail or film.status
    if state.status == "queued":
        return f"queued (position {state.queue_position})" if state.queue_position else "queued"
    stage = f" {state.current_stage}" if state.current_stage else ""
    return f"{state.status}{stage}"


def run_batch(settings: Any, films: Sequence[BatchFilm], *, qa: str, output_dir: Path | None,
              console: Console, err_console: Console, production: Callable[..., Any],
              poll_s: float = 1.0) -> int:
    """Submit every film, show one progress line per film until all ended, copy the films; the failures count.

    ``production(settings, timeout=...)`` opens a ProductionClient (cli.py's, so tests
    and the CLI share one way in). A film whose plan or submission fails is reported
    and the others go on.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.fields[label]:<32.32}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[line]}"), TimeElapsedColumn(), console=console) as progress, \
            production(settings, timeout=120) as client:
        tasks = {id(f): progress.add_task("", total=100, label=f.label, line="waiting to plan") for f in films}
        # Every plan first, then every submission: the films reach the queue together, in order.
        requests: dict[int, dict[str, Any]] = {}
        for film in films:
            progress.update(tasks[id(film)], line="planning")
            try:
                requests[id(film)] = film.request()
            except SparkleError as exc:
                film.status, film.detail = "failed", f"no plan: {exc}"
                progress.update(tasks[id(film)], line=f"[red]{film.detail}[/]")
                continue
            progress.update(tasks[id(film)], line="planned")
        for film in films:
            if id(film) not in requests:
                continue
            try:
                accepted = client.start(**requests[id(film)], qa_mode=qa)
            except SparkleError as exc:
                film.status, film.detail = "failed", f"not started: {exc}"
                progress.update(tasks[id(film)], line=f"[red]{film.detail}[/]")
                continue
            film.run_id, film.status = accepted.run_id, accepted.status
            progress.update(tasks[id(film)], line=f"{accepted.status} — run {accepted.run_id}")
        interrupted_since: dict[str, float] = {}
        while any(f.run_id and f.status not in ENDED for f in films):
            for film in films:
                if not film.run_id or film.status in ENDED:
                    continue
                state = client.status(film.run_id)   # the client rides out a production_agent restart
                film.status = state.status
                if state.status == "interrupted":
                    # A restarted production_agent resumes it (auto_resume); give up after the restart budget.
                    first = interrupted_since.setdefault(film.run_id, time.monotonic())
                    if not settings.auto_resume or time.monotonic() - first > settings.client.restart_wait_s:
                        film.status = "failed"
                else:
                    interrupted_since.pop(film.run_id, None)
                if state.status == "failed" and state.error:
                    film.detail = str(state.error.get("message", ""))[:120]
                progress.update(tasks[id(film)], completed=100 * state.progress,
                                line=_line(film, state) + (f" — {film.detail}" if film.detail else ""))
            time.sleep(poll_s)
        for film in films:
            if film.status == "succeeded" and film.run_id:
                entry = client.final_film(film.run_id)
                if entry is not None:
                    film.film = Path(entry["local_path"])
    failures = 0
    for number, film in enumerate(films, start=1):
        if film.status != "succeeded" or film.film is None:
            failures += 1
            err_console.print(f"[bold red]{film.label}[/]: {film.status}"
                              f"{' — ' + film.detail if film.detail else ''}"
                              f"{f' (run {film.run_id})' if film.run_id else ''}", highlight=False)
            continue
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            target = output_dir / f"{number:02d}-{_slug(film.label)}.mp4"
            shutil.copyfile(film.film, target)
            film.film = target
        console.print(f"film: {film.film.resolve()}  ({film.label}, run {film.run_id})", highlight=False)
    console.print(f"{len(films) - failures} of {len(films)} films made")
    return failures

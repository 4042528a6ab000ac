"""`sparkle-motion` — the command line.

Exit codes: 0 success, 2 bad input (invalid plan, bad arguments), 1 failure.
Heavy modules are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sparkle_motion.errors import InvalidInputError, PlanValidationError, SparkleError

app = typer.Typer(
    name="sparkle-motion",
    help="Turn a one-line idea into a short film.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="JSON Schema of the MoviePlan and every request/response envelope.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

console = Console(soft_wrap=True)  # no hard wraps: output is often piped or parsed
err_console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _fail(exc: SparkleError) -> "typer.Exit":
    """Print a typed error (and every violation it carries) and pick the exit code."""
    bad_input = isinstance(exc, InvalidInputError)
    err_console.print(f"[bold red]error[/]: {exc}")
    for detail in exc.details:
        path = detail.get("path") or detail.get("field") or "$"
        err_console.print(f"  [yellow]{path}[/]: {detail.get('message')}")
    return typer.Exit(EXIT_BAD_INPUT if bad_input else EXIT_FAILURE)


@app.command()
def validate(plan_file: Path = typer.Argument(..., help="MoviePlan JSON file (or a plan artifact wrapping one).")) -> None:
    """Validate a MoviePlan: prints OK or every violation with its JSON path (exit 0 / 2)."""
    from sparkle_motion.plan import load_plan_file
    from sparkle_motion.plan.policy import screen_plan

    try:
        plan = load_plan_file(plan_file)
        screen_plan(plan)   # the content policy plan intake applies (a ContentPolicyError: exit 2)
    except PlanValidationError as exc:
        err_console.print(f"[bold red]INVALID[/] {plan_file}: {len(exc.details) or 1} violation(s)")
        for detail in exc.details:
            err_console.print(f"  [yellow]{detail.get('path', '$')}[/]: {detail.get('message')}")
        if not exc.details:
            err_console.print(f"  {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except SparkleError as exc:
        raise _fail(exc) from None
    console.print(
        f"[bold green]OK[/] {plan_file}: '{plan.title}' — {len(plan.shots)} shots, "
        f"{len(plan.base_images)} base images, {sum(1 for e in plan.dialogue_timeline if e.type == 'dialogue')} "
        f"dialogue lines, {plan.runtime_s:.2f} s"
    )


@schemas_app.command("export")
def schemas_export(out_dir: Path = typer.Option(Path("schemas"), "--out", help="Folder to write *.schema.json into.")) -> None:
    """Write JSON Schema for MoviePlan and every request/response envelope."""
    from sparkle_motion.schemas_export import export_schemas

    written = export_schemas(out_dir)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"[green]{len(written)} schemas[/] in {out_dir}")


@schemas_app.command("check")
def schemas_check(out_dir: Path = typer.Option(Path("schemas"), "--out")) -> None:
    """Exit 1 when the committed schemas differ from what the models export."""
    from sparkle_motion.schemas_export import check_schemas

    stale = check_schemas(out_dir)
    if stale:
        err_console.print(f"[red]schemas out of date[/]: {', '.join(stale)} — run `sparkle-motion schemas export`")
        raise typer.Exit(EXIT_FAILURE)
    console.print("[green]schemas up to date[/]")


@app.command()
def serve(
    tool_id: str = typer.Argument(..., help="A tool id from configs/tool_registry.yaml, e.g. images_sdxl."),
    host: Optional[str] = typer.Option(None, help="Bind address (default: the registry's, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default: the registry's)."),
) -> None:
    """Run one service in the foreground."""
    from sparkle_motion.services import serve as serve_tool

    try:
        serve_tool(tool_id, host=host, port=port)
    except SparkleError as exc:
        raise _fail(exc) from None


# -- the mesh -----------------------------------------------------------------------

ProfileOption = typer.Option(None, "--profile", help="cpu, gpu, or a path to a profile YAML (default: $SPARKLE_PROFILE or cpu).")


def _settings(profile: Optional[str]):
    """Settings for this command; --profile wins over SPARKLE_PROFILE."""
    import os

    from sparkle_motion.config import get_settings, load_settings

    if profile:
        os.environ["SPARKLE_PROFILE"] = profile
        return load_settings(profile=profile)
    return get_settings()


def _ensure_mesh(settings) -> None:
    from sparkle_motion import mesh

    if mesh.is_up(settings):
        return
    with console.status(f"starting the mesh (profile {settings.profile_name}) …"):
        started = time.perf_counter()
        mesh.up(settings)
    console.print(f"mesh up in {time.perf_counter() - started:.1f} s (profile [bold]{settings.profile_name}[/])")


@app.command()
def up(profile: Optional[str] = ProfileOption,
       engine: Optional[str] = typer.Option(None, "--engine", help="local (one process per service) or ray "
                                            "(the tools as Ray Serve deployments); default: the profile's."),
       address: Optional[str] = typer.Option(None, "--address", help="with --engine ray: the Ray cluster to "
                                             "join (default: start a local Ray instance).")) -> None:
    """Start all eight services (detached) and wait until each is ready."""
    import os

    # The supervisor and the services it starts read the engine from these (engine_config.py).
    for key, value in (("SPARKLE_ENGINE", engine), ("SPARKLE_RAY_ADDRESS", address)):
        if value:
            os.environ[key] = value
    settings = _settings(profile)
    try:
        _ensure_mesh(settings)
    except SparkleError as exc:
        raise _fail(exc) from None
    status()


@app.command()
def down() -> None:
    """Stop the mesh started by `up`."""
    from sparkle_motion import mesh

    stopped = mesh.down(_settings(None))
    console.print("mesh stopped" if stopped else "no mesh running")


@app.command()
def status() -> None:
    """Show every service: pid, port, readiness, backend, restarts."""
    from rich.table import Table

    from sparkle_motion import mesh

    settings = _settings(None)
    state, rows = mesh.status(settings)
    table = Table(title=f"mesh — profile {state.get('profile') if state else settings.profile_name} — {settings.home}")
    for column in ("service", "url", "pid", "ready", "backend", "restarts"):
        table.add_column(column)
    for row in rows:
        ready = "[green]ready[/]" if row.ready else ("[yellow]starting[/]" if row.alive else "[red]down[/]")
        where = f"ray x{row.replicas}" if row.engine == "ray" else str(row.pid or "-")
        table.add_row(row.tool_id, row.url, where, ready, row.backend, str(row.restarts))
    console.print(table)


# -- planning and production ----------------------------------------------------------------

AspectOption = typer.Option(None, "--aspect", help="Frame aspect: 16:9, 9:16 (vertical) or 1:1 (default: the profile's).")
FpsOption = typer.Option(None, "--fps", min=1, max=60, help="Frame rate (default: the profile's).")


def _check_aspect(aspect: Optional[str]) -> None:
    from sparkle_motion.media.geometry import parse_aspect

    if aspect is not None:
        try:
            parse_aspect(aspect, field="--aspect")
        except InvalidInputError as exc:
            raise _fail(exc) from None


def _request_plan(settings, idea: str, *, title, shots, duration, seed, style, aspect=None, fps=None) -> dict:
    from sparkle_motion.services import ToolClient

    payload = {"prompt": idea, "title": title, "shots": shots, "duration_s": duration, "seed": seed, "style": style,
               "aspect": aspect.strip() if aspect else None, "fps": fps}
    with ToolClient("script_agent", settings=settings, timeout=600.0) as client:
        return client.invoke({k: v for k, v in payload.items() if v is not None})


def _production(settings, timeout: float = 30.0, restart_wait_s: float | None = None):
    from sparkle_motion.agents.production_client import ProductionClient

    return ProductionClient(settings, timeout=timeout, restart_wait_s=restart_wait_s)


#: How long the progress watch retries a refused production_agent before telling the user it went away.
NOTICE_LOST_AFTER_S = 2.0


def _resume_hint(run_id: str) -> str:
    return f"resume with: sparkle-motion resume {run_id}"


def _announce_lost(run_id: str, settings):
    """What `produce`/`make` print when production_agent goes away mid-run (it may come back by itself)."""
    def announce(exc) -> None:
        waiting = " — the mesh supervisor restarts it"
        waiting += " and it resumes the run by itself; waiting" if settings.auto_resume else "; waiting for it"
        err_console.print(f"[bold yellow]production_agent went away during run {run_id}[/]{waiting} "
                          f"(up to {settings.client.restart_wait_s:.0f} s). If it does not come back: "
                          f"{_resume_hint(run_id)}")
    return announce


#: Without a terminal (piped, logged), an item's progress line is printed at most this often.
ITEM_LINE_EVERY_S = 5.0


class _ItemRows:
    """The items in flight under the stage bars: a live row each on a terminal, else a throttled line.

    The rows show what ``/status`` reports for each long-running tool job, e.g.
    ``video_clips shot_002: step 31/50, eta 4m10s``.
    """

    def __init__(self, progress) -> None:
        self.progress = progress
        self.live = progress.console.is_terminal
        self.rows: dict[tuple[str, str | None], int] = {}
        self.printed: dict[tuple[str, str | None], tuple[float, str]] = {}

    def update(self, items) -> None:
        seen = set()
        for item in items:
            if item.step is None:
                continue                     # a sync call, or a job before its first step: the stage bar says enough
            key = (item.stage, item.item)
            seen.add(key)
            if self.live:
                total = item.total or max(item.step, 1)   # the bars' "done/total" column needs a number
                if key not in self.rows:
                    self.rows[key] = self.progress.add_task("", total=total)
                self.progress.update(self.rows[key], description=f"  {item.summary}", completed=item.step,
                                     total=total)
                continue
            last = self.printed.get(key)
            if last is None or (last[1] != item.summary and time.monotonic() - last[0] >= ITEM_LINE_EVERY_S):
                self.progress.console.print(f"  {item.summary}", highlight=False)
                self.printed[key] = (time.monotonic(), item.summary)
        for key in [k for k in self.rows if k not in seen]:
            self.progress.remove_task(self.rows.pop(key))


def _watch(settings, run_id: str, graph: list[dict]):
    """Poll /status and draw a progress bar per stage (and a row per item in flight) until the run ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    totals = {g["stage"]: max(1, g.get("calls", 0) + g.get("qa_calls", 0)) for g in graph}
    totals["dialogue_audio"] = totals.get("dialogue_audio", 0) + 1  # the stitched timeline
    with _production(settings, restart_wait_s=NOTICE_LOST_AFTER_S) as client, Progress(
        TextColumn("{task.description:<15}"), BarColumn(), TextColumn("{task.completed:>3.0f}/{task.total:<3.0f}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        tasks = {stage: progress.add_task(stage, total=totals.get(stage, 1)) for stage in totals}
        items = _ItemRows(progress)
        for state in client.watch(run_id, interval=0.5, on_service_lost=_announce_lost(run_id, settings)):
            items.update(state.items)
            done: dict[str, int] = {}
            for step in state.steps:
                if step.status in ("succeeded", "cached"):
                    done[step.stage] = done.get(step.stage, 0) + 1
            for stage, task in tasks.items():
                progress.update(task, completed=min(totals[stage], done.get(stage, 0)))
        if state.status == "succeeded":
            for stage, task in tasks.items():
                progress.update(task, completed=totals[stage])
        return state


def _produce(settings, *, plan: dict | None = None, plan_uri: str | None = None, run_id: str | None = None,
             resume_from: str | None = None, qa: str = "full", output: Optional[Path] = None,
             started: float | None = None, review: list[str] | None = None, prompt: str | None = None) -> None:
    from sparkle_motion.agents.production_client import FINAL_FILM_TYPE, RUN_SUMMARY_TYPE, find_artifact

    started = started or time.perf_counter()
    request = {"plan": plan, "plan_uri": plan_uri, "run_id": run_id, "resume_from": resume_from, "qa_mode": qa}
    with _production(settings, timeout=120) as client:
        # The dry run's invocation graph sizes the progress bars; a resume reuses the recorded plan.
        graph = (client.plan(**request).invocation_graph if run_id is None else None) or []
        accepted = client.start(**request, review=review)
        run_id = accepted.run_id
    begun = "queued: it starts when a run slot frees" if accepted.status == "queued" else "started"
    console.print(f"run [bold]{run_id}[/] {begun} (qa {qa}){' — QA SKIPPED' if qa == 'skip' else ''}")
    if not graph:
        from sparkle_motion.agents.production_models import STAGES

        graph = [{"stage": s, "calls": 1} for s in STAGES]
    try:
        final = _watch(settings, run_id, graph)
        if final.status == "awaiting_review":
            from sparkle_motion.cli_review import review_in_terminal

            final = review_in_terminal(lambda: _production(settings), final, prompt=prompt, console=console,
                                       err_console=err_console, watch=lambda rid: _watch(settings, rid, graph))
            run_id = final.run_id
            if final.status == "awaiting_review":
                return
    except SparkleError:
        # production_agent is gone for good (or never answered again): the run is recorded; say how to go on.
        err_console.print(f"[bold red]lost production_agent while watching run {run_id}[/]; {_resume_hint(run_id)}")
        raise
    if final.status != "succeeded":
        error = final.error or {}
        err_console.print(f"[bold red]run {run_id} {final.status}[/] in stage "
                          f"[bold]{error.get('stage') or final.current_stage}[/]: {error.get('message', '')}")
        err_console.print(_resume_hint(run_id))
        raise typer.Exit(EXIT_FAILURE)
    with _production(settings) as client:
        arts = client.artifacts(run_id, "finalize")
    final_entry = find_artifact(arts, FINAL_FILM_TYPE)
    if final_entry is None:
        raise SparkleError(f"run {run_id} succeeded without a final film", code="final_film_missing",
                           context={"run_id": run_id})
    summary_entry = find_artifact(arts, RUN_SUMMARY_TYPE)
    summary = json.loads(Path(summary_entry["local_path"]).read_text()) if summary_entry else {}
    film = Path(final_entry["local_path"])
    if output is not None:
        import shutil

        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(film, output)
        film = output
    from rich.table import Table

    table = Table(show_header=False, title=f"[bold green]{summary.get('title', 'film')}[/]")
    table.add_row("film", str(film.resolve()))
    table.add_row("runtime", f"{summary.get('runtime_s', 0):.2f} s")
    table.add_row("shots", str(summary.get("shots")))
    table.add_row("dialogue lines", str(summary.get("dialogue_lines")))
    table.add_row("QA verdict", str(summary.get("qa_verdict")))
    table.add_row("run", run_id)
    table.add_row("wall time", f"{time.perf_counter() - started:.1f} s")
    console.print(table)
    # One plain line with the whole path: tables truncate on narrow terminals, scripts grep this.
    console.print(f"film: {film.resolve()}", highlight=False)


@app.command()
def plan(
    idea: str = typer.Argument(..., help="The one-line idea."),
    output: Path = typer.Option(Path("plan.json"), "-o", "--output"),
    title: Optional[str] = typer.Option(None), shots: Optional[int] = typer.Option(None, min=1, max=12),
    duration: Optional[float] = typer.Option(None, min=2, max=300), seed: Optional[int] = typer.Option(None, min=0),
    style: Optional[str] = typer.Option(None), profile: Optional[str] = ProfileOption,
    aspect: Optional[str] = AspectOption, fps: Optional[int] = FpsOption,
) -> None:
    """Write a validated MoviePlan for an idea (script_agent)."""
    _check_aspect(aspect)
    settings = _settings(profile)
    try:
        _ensure_mesh(settings)
        result = _request_plan(settings, idea, title=title, shots=shots, duration=duration, seed=seed, style=style,
                               aspect=aspect, fps=fps)
    except SparkleError as exc:
        raise _remote_fail(exc) from None
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.plan.validation import read_plan_json

    movie_plan = read_plan_json(ArtifactStore(settings.home).path_for(result["artifact_uri"]))
    output.write_text(json.dumps(movie_plan, indent=2) + "\n")
    meta = movie_plan.get("metadata", {})
    console.print(f"wrote {output} — planner: {meta.get('source')} — {result['artifact_uri']}")


@app.command()
def produce(
    plan_files: list[Path] = typer.Argument(..., help="MoviePlan JSON; several files are queued as one batch."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The film (several plans: a folder)."),
    qa: str = typer.Option("full", "--qa", help="full or skip"), profile: Optional[str] = ProfileOption,
) -> None:
    """Produce a film from a plan file (or one film per plan file, queued together)."""
    from sparkle_motion.plan import load_plan_file

    _check_qa(qa)
    if len(plan_files) > 1:
        _batch(profile, qa, output, [(f.name, _plan_loader(f)) for f in plan_files])
        return
    plan_file = plan_files[0]
    try:
        movie_plan = load_plan_file(plan_file)
    except PlanValidationError:
        validate(plan_file)
        return
    settings = _settings(profile)
    try:
        _ensure_mesh(settings)
        _produce(settings, plan=movie_plan.model_dump(mode="json"), qa=qa, output=output)
    except SparkleError as exc:
        raise _remote_fail(exc) from None


@app.command()
def resume(run_id: str = typer.Argument(...), from_stage: Optional[str] = typer.Option(None, "--from"),
           output: Optional[Path] = typer.Option(None, "-o", "--output")) -> None:
    """Resume a run; finished steps are not redone (--from STAGE recomputes that stage onwards)."""
    settings = _settings(None)
    try:
        _ensure_mesh(settings)
        with _production(settings) as client:
            run = client.status(run_id)
        _produce(settings, run_id=run_id, resume_from=from_stage, qa=run.qa_mode or "full", output=output)
    except SparkleError as exc:
        raise _remote_fail(exc) from None


@app.command()
def runs(limit: int = typer.Option(20, min=1, max=500)) -> None:
    """List recent production runs."""
    from rich.table import Table

    settings = _settings(None)
    try:
        _ensure_mesh(settings)
        with _production(settings) as client:
            listing = client.runs(limit)
    except SparkleError as exc:
        raise _remote_fail(exc) from None
    table = Table()
    for column in ("run", "status", "stage", "progress", "qa", "created"):
        table.add_column(column)
    for run in listing:
        table.add_row(run.run_id, run.status, str(run.current_stage or "-"), f"{100 * run.progress:.0f}%",
                      run.qa_mode, run.created_at)
    console.print(table)


@app.command()
def make(
    idea: Optional[str] = typer.Argument(None, help="The one-line idea (or --batch FILE)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The film (default film.mp4; --batch: a "
                                          "folder, default films)."),
    shots: Optional[int] = typer.Option(None, min=1, max=12), duration: Optional[float] = typer.Option(None, min=2, max=300),
    seed: Optional[int] = typer.Option(None, min=0), title: Optional[str] = typer.Option(None),
    style: Optional[str] = typer.Option(None), qa: str = typer.Option("full", "--qa", help="full or skip"),
    profile: Optional[str] = ProfileOption,
    aspect: Optional[str] = AspectOption, fps: Optional[int] = FpsOption,
    music: Optional[Path] = typer.Option(None, "--music", help="Audio file laid under the film as a ducked music bed."),
    cast: list[str] = typer.Option([], "--cast", help="CHARACTER=PHOTO: the character's portrait (repeatable)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="A text file of ideas, one a line: one film each, "
                                         "queued together (blank lines and # comments skipped)."),
    review: list[str] = typer.Option([], "--review", help="Stop for review after: plan, cast, keyframes or clips "
                                     "(repeatable); answer in the terminal: approve, re-roll N, edit N."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="With --review: the new prompt for 'edit N' "
                                         "(default: $EDITOR opens on the current one)."),
) -> None:
    """Idea → plan → film: brings the mesh up if needed and shows progress per stage."""
    _check_qa(qa)
    _check_aspect(aspect)
    if batch is not None:
        from sparkle_motion.cli_batch import read_ideas

        if idea is not None or music is not None or cast or review:
            err_console.print("[bold red]error[/]: --batch: give either an idea or --batch FILE (and no --music, "
                              "--cast or --review)")
            raise typer.Exit(EXIT_BAD_INPUT)
        try:
            ideas = read_ideas(batch)
        except InvalidInputError as exc:
            raise _fail(exc) from None
        options = {"title": title, "shots": shots, "duration": duration, "seed": seed, "style": style,
                   "aspect": aspect, "fps": fps}
        _batch(profile, qa, output or Path("films"),
               [(text, lambda s, text=text: {"plan_uri": _request_plan(s, text, **options)["artifact_uri"]})
                for text in ideas])
        return
    output = output or Path("film.mp4")
    if idea is None or not idea.strip():
        err_console.print("[bold red]error[/]: idea: must not be empty")
        raise typer.Exit(EXIT_BAD_INPUT)
    started = time.perf_counter()
    settings = _settings(profile)
    music_id = _upload_music(settings, music) if music is not None else None
    cast_ids = _upload_cast(settings, cast)
    try:
        _ensure_mesh(settings)
        result = _request_plan(settings, idea, title=title, shots=shots, duration=duration, seed=seed, style=style,
                               aspect=aspect, fps=fps)
        summary = result.get("plan_summary") or {}
        planner = settings.tool_profile("script_agent").model
        console.print(f"plan [bold]{summary.get('title', '')}[/] by {planner}"
                      f"{' (offline planner: deterministic, no LLM)' if planner == 'sparkle-offline-planner' else ''}: "
                      f"{summary.get('shots', '?')} shots, {summary.get('dialogue_lines', '?')} lines, "
                      f"{summary.get('runtime_s', 0):.1f} s — {result['artifact_uri']}")
        if music_id is None and not cast_ids:
            _produce(settings, plan_uri=result["artifact_uri"], qa=qa, output=output, started=started,
                     review=review, prompt=prompt)
        else:
            _produce(settings, plan=_with_music(settings, result["artifact_uri"], music_id, cast_ids), qa=qa,
                     output=output, started=started, review=review, prompt=prompt)
    except SparkleError as exc:
        raise _remote_fail(exc) from None


def _plan_loader(plan_file: Path):
    from sparkle_motion.plan import load_plan_file

    try:
        plan = load_plan_file(plan_file).model_dump(mode="json")
    except SparkleError:
        validate(plan_file)   # prints the violations (or why the file is unreadable) and exits 2
        raise
    return lambda _settings: {"plan": plan}


def _batch(profile: Optional[str], qa: str, output: Optional[Path], films: list) -> None:
    """Several films through production_agent's queue (cli_batch.py); exit 1 if any failed."""
    from sparkle_motion.cli_batch import BatchFilm, run_batch

    settings = _settings(profile)
    try:
        _ensure_mesh(settings)
        failures = run_batch(settings, [BatchFilm(label, lambda make=make: make(settings)) for label, make in films],
                             qa=qa, output_dir=output, console=console, err_console=err_console,
                             production=_production)
    except SparkleError as exc:
        raise _remote_fail(exc) from None
    if failures:
        raise typer.Exit(EXIT_FAILURE)


@app.command("review")
def review_run(
    run_id: str = typer.Argument(...),
    approve: bool = typer.Option(False, "--approve", help="Continue past the gate the run waits at."),
    regenerate: list[str] = typer.Option([], "--regenerate", help="ITEM[:SEED], e.g. frame_002 or frame_002:123 "
                                         "(repeatable); after a finished run this makes a new run."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A new prompt for the one --regenerate item."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the run stops again (a gate, or its end)."),
) -> None:
    """Approve a run waiting for review, or regenerate items of it, without a prompt (for scripts)."""
    from sparkle_motion.cli_review import parse_regenerate

    if approve == bool(regenerate):
        err_console.print("[bold red]error[/]: give --approve or --regenerate ITEM[:SEED] (not both)")
        raise typer.Exit(EXIT_BAD_INPUT)
    settings = _settings(None)
    try:
        items = parse_regenerate(regenerate, prompt)
        with _production(settings) as client:
            status = client.review(run_id, approve=approve, regenerate=items)
            if wait:
                status = client.wait_for_status(status.run_id, {"succeeded", "failed", "stopped", "awaiting_review"},
                                                timeout=24 * 3600)
    except SparkleError as exc:
        raise _remote_fail(exc) from None
    console.print(f"run {status.run_id}: {status.status}", highlight=False)
    if status.status in ("failed", "stopped", "interrupted"):
        raise typer.Exit(EXIT_FAILURE)


def _upload_music(settings, music: Path) -> str:
    """Check and store the --music file before anything runs; its artifact id."""
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.artifacts.uploads import put_music_file

    try:
        manifest = put_music_file(ArtifactStore(settings.home), music)
    except SparkleError as exc:
        raise _fail(exc) from None
    console.print(f"music bed: {music.name} — {manifest.uri}", highlight=False)
    return manifest.artifact_id


def _upload_cast(settings, cast: list[str]) -> dict[str, str]:
    """Check and store the --cast photos before anything runs: {character: artifact id}."""
    from sparkle_motion.agents.cast_stage import upload_cast

    try:
        return upload_cast(settings, cast, console.print)
    except SparkleError as exc:
        raise _fail(exc) from None


def _with_music(settings, plan_uri: str, music_id: str | None, cast_ids: dict[str, str] | None = None) -> dict:
    """The planned film with the music bed and the cast's photos added (validated again, as every plan is)."""
    from sparkle_motion.agents.cast_stage import cast_plan
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.plan import validate_plan
    from sparkle_motion.plan.validation import read_plan_json

    plan = cast_plan(read_plan_json(ArtifactStore(settings.home).path_for(plan_uri)), cast_ids or {})
    bed = {"music": {"artifact_id": music_id}} if music_id else {}
    return validate_plan({**plan, **bed}).model_dump(mode="json")


@app.command()
def prune(
    older_than_days: Optional[float] = typer.Option(None, min=0, help="Remove runs whose newest artifact is older."),
    max_bytes: Optional[int] = typer.Option(None, min=0, help="Keep the newest runs within this many bytes."),
    apply: bool = typer.Option(False, "--apply", help="Delete for real (default: dry run, only report)."),
) -> None:
    """Retention: remove old runs' artifacts by age or byte budget, and sweep crash leftovers (dry run by default)."""
    from sparkle_motion.artifacts import ArtifactStore
    from sparkle_motion.artifacts.retention import prune_runs

    if older_than_days is None and max_bytes is None:
        err_console.print("[bold red]error[/]: give --older-than-days and/or --max-bytes")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        settings = _settings(None)
        result = prune_runs(ArtifactStore(settings.home, db_path=settings.db_path), older_than_days=older_than_days,
                            max_bytes=max_bytes, apply=apply, sweep=settings.sweep)
    except SparkleError as exc:
        raise _fail(exc) from None
    for line in result.lines():
        console.print(line)


def _check_qa(qa: str) -> None:
    if qa not in ("full", "skip"):
        err_console.print(f"[bold red]error[/]: --qa: must be full or skip (got {qa!r})")
        raise typer.Exit(EXIT_BAD_INPUT)


def _remote_fail(exc: SparkleError) -> "typer.Exit":
    """A ToolCallError's 4xx is the user's input; anything else is a failure."""
    from sparkle_motion.errors import ToolCallError

    if isinstance(exc, ToolCallError) and exc.status is not None and 400 <= exc.status < 500:
        remote = exc.remote_error or {}
        err_console.print(f"[bold red]error[/] from {exc.tool_id}: "
                          f"{(remote.get('field') + ': ') if remote.get('field') else ''}{remote.get('message', exc.message)}")
        for detail in remote.get("details") or []:
            path = detail.get("path") or detail.get("field") or "$"
            err_console.print(f"  [yellow]{path}[/]: {detail.get('message')}")
        return typer.Exit(EXIT_BAD_INPUT)
    return _fail(exc)


def main() -> None:  # pragma: no cover - console entry point wrapper
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The command line's side of review gates: `make --review GATE` asks in the terminal, `review RUN_ID` scripts it.

It speaks only through :class:`ProductionClient` and never imports ``cli.py``
(which imports it): the caller hands in its own way to open a client, to watch
a run with progress bars, and its consoles.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sparkle_motion.agents.production_client import ProductionClient
from sparkle_motion.agents.production_models import ReviewView, RunStatus
from sparkle_motion.errors import InvalidInputError, SparkleError

__all__ = ["contact_sheet_path", "decide", "parse_regenerate", "print_review", "review_in_terminal"]

ClientFactory = Callable[[], AbstractContextManager[ProductionClient]]
PROMPT_SHOWN = 70
HELP = "approve (a) · re-roll N (r N) · edit N (e N) · stop (s)"


def parse_regenerate(specs: list[str], prompt: str | None) -> list[dict[str, Any]]:
    """``frame_002`` / ``frame_002:123`` → the review request's regenerate items; ``prompt`` edits the one named."""
    items: list[dict[str, Any]] = []
    for spec in specs:
        item, _, seed = spec.partition(":")
        entry: dict[str, Any] = {"item": item}
        if seed:
            if not seed.isdigit():
                raise InvalidInputError(f"seed must be a non-negative integer (got {seed!r})", field="--regenerate")
            entry["seed"] = int(seed)
        items.append(entry)
    if prompt is not None:
        if len(items) != 1:
            raise InvalidInputError("--prompt edits one item: name exactly one --regenerate", field="--prompt")
        items[0]["prompt"] = prompt
    return items


def contact_sheet_path(client: ProductionClient, run_id: str, view: ReviewView) -> str | None:
    if view.contact_sheet_artifact_id is None:
        return None
    entries = client.artifacts(run_id).artifacts
    entry = next((e for e in entries if e.get("artifact_id") == view.contact_sheet_artifact_id), None)
    return entry.get("local_path") if entry else None


def print_review(console: Console, client: ProductionClient, status: RunStatus) -> ReviewView:
    view = status.review
    if view is None:
        raise SparkleError(f"run {status.run_id} is {status.status} but shows no review gate", code="no_review_view")
    sheet = contact_sheet_path(client, status.run_id, view)
    console.print(f"run [bold]{status.run_id}[/] awaits review at gate [bold]{view.gate}[/] "
                  f"(after {view.stage}, plan revision {view.plan_revision})")
    if sheet:
        console.print(f"contact sheet: {sheet}", highlight=False)
    table = Table()
    for column in ("N", "item", "seed", "prompt"):
        table.add_column(column)
    for number, item in enumerate(view.items, start=1):
        prompt = item.prompt or ""
        table.add_row(str(number), item.item, "-" if item.seed is None else str(item.seed),
                      prompt if len(prompt) <= PROMPT_SHOWN else prompt[:PROMPT_SHOWN - 1] + "…")
    console.print(table)
    return view


def _item_named(view: ReviewView, token: str) -> str:
    """N (1-based, as printed) or an item id."""
    if token.isdigit() and 1 <= int(token) <= len(view.items):
        return view.items[int(token) - 1].item
    if any(i.item == token for i in view.items):
        return token
    raise InvalidInputError(f"no item {token!r}: give its number (1-{len(view.items)}) or its id", field="item")


def decide(view: ReviewView, answer: str, *, prompt: str | None = None,
           editor: Callable[[str], str | None] = click.edit) -> dict[str, Any] | None:
    """One terminal answer → the review request's body; None for 'stop'. Edits use ``prompt`` or ``$EDITOR``."""
    words = answer.strip().split()
    if not words:
        raise InvalidInputError(HELP, field="answer")
    verb = words[0].lower()
    if verb in ("a", "approve"):
        return {"approve": True}
    if verb in ("s", "stop", "q", "quit"):
        return None
    if verb in ("r", "reroll", "re-roll", "e", "edit") and len(words) == 2:
        item = _item_named(view, words[1])
        if verb.startswith("r"):
            return {"regenerate": [{"item": item}]}
        text = prompt
        if text is None:
            current = next(i.prompt for i in view.items if i.item == item) or ""
            edited = editor(current)
            if edited is None or not edited.strip() or edited.strip() == current.strip():
                raise InvalidInputError(f"the prompt of {item} was not changed", field="prompt")
            text = edited.strip()
        return {"regenerate": [{"item": item, "prompt": text}]}
    raise InvalidInputError(HELP, field="answer")


def review_in_terminal(open_client: ClientFactory, status: RunStatus, *, watch: Callable[[str], RunStatus],
                       console: Console, err_console: Console, prompt: str | None = None,
                       ask: Callable[[str], str] = input) -> RunStatus:
    """Ask at every gate until the run moves past the last one (or the user stops asking); the last status."""
    while status.status == "awaiting_review":
        with open_client() as client:
            view = print_review(console, client, status)
            try:
                body = decide(view, ask(f"{HELP} > "), prompt=prompt)
            except InvalidInputError as exc:
                err_console.print(f"[yellow]{exc.message}[/]")
                continue
            except EOFError:
                body = None
            if body is None:
                console.print(f"left waiting; later: sparkle-motion review {status.run_id} --approve")
                return status
            try:
                answered = client.review(status.run_id, **body)
            except SparkleError as exc:
                remote = getattr(exc, "remote_error", None) or {}
                err_console.print(f"[yellow]{remote.get('field') or ''} {remote.get('message') or exc}[/]")
                continue
        status = watch(answered.run_id)
    return status

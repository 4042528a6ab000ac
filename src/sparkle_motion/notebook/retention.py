"""Retention from the notebook: runs ``sparkle-motion prune`` (a dry run unless ``apply=True``).

The CLI owns the policy (age / byte budget, newest runs kept); the notebook only
calls it, in a subprocess with a timeout, against the same SPARKLE_HOME the mesh uses.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pydantic import BaseModel

from sparkle_motion.config import Settings, get_settings
from sparkle_motion.errors import InvalidInputError, SparkleError

__all__ = ["PruneResult", "RetentionError", "prune_command", "prune_runs"]


class RetentionError(SparkleError):
    code = "retention_failed"
    http_status = 500


class PruneResult(BaseModel):
    command: list[str]
    applied: bool
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        mode = "applied" if self.applied else "dry run"
        return f"$ {' '.join(self.command[2:])}  ({mode})\n{self.stdout.strip()}"


def prune_command(*, older_than_days: float | None = None, max_bytes: int | None = None,
                  apply: bool = False) -> list[str]:
    if older_than_days is None and max_bytes is None:
        raise InvalidInputError("give older_than_days and/or max_bytes", field="older_than_days")
    if older_than_days is not None and older_than_days < 0:
        raise InvalidInputError(f"must be >= 0 (got {older_than_days})", field="older_than_days")
    if max_bytes is not None and max_bytes < 0:
        raise InvalidInputError(f"must be >= 0 (got {max_bytes})", field="max_bytes")
    command = [sys.executable, "-m", "sparkle_motion.cli", "prune"]
    if older_than_days is not None:
        command += ["--older-than-days", repr(float(older_than_days))]
    if max_bytes is not None:
        command += ["--max-bytes", str(int(max_bytes))]
    if apply:
        command.append("--apply")
    return command


def prune_runs(*, older_than_days: float | None = None, max_bytes: int | None = None, apply: bool = False,
               settings: Settings | None = None, timeout_s: float = 120.0) -> PruneResult:
    """Prune old runs' artifacts; dry run (report only) unless ``apply``. Raises RetentionError on failure."""
    command = prune_command(older_than_days=older_than_days, max_bytes=max_bytes, apply=apply)
    settings = settings or get_settings()
    env = {**os.environ, "SPARKLE_HOME": str(settings.home), "SPARKLE_PROFILE": str(settings.profile_path),
           # rich wraps at the terminal width and colours for terminals; a pipe wants neither.
           "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RetentionError(f"sparkle-motion prune did not finish within {timeout_s:.0f} s",
                             context={"command": command}) from exc
    result = PruneResult(command=command, applied=apply, returncode=done.returncode, stdout=done.stdout,
                         stderr=done.stderr)
    if done.returncode != 0:
        raise RetentionError(f"sparkle-motion prune exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-500:]}", context={"command": command})
    return result

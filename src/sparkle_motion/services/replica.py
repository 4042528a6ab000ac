"""Which replica of its tool this process serves, and what that means for its staging files.

On the local engine a tool is one process per home: when it starts, no call of that tool
is alive, so every staging file named ``<tool_id>-...`` is a dead call's leftover. Under Ray
Serve (``ray_engine.py``) several replicas of one tool share the home and start and die
independently (Serve restarts a crashed one while its sibling is mid-clip), so a replica
names its staging files ``<tool_id>-p<pid>-...`` and, at start, removes only those whose
process is gone. The Serve deployment calls :func:`set_current` before it builds the app;
nothing else does, so a plain process keeps today's behaviour.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sparkle_motion.process_liveness import pid_alive

__all__ = ["ReplicaInfo", "current", "dead_replica_staging", "set_current", "staging_prefix"]


@dataclass(frozen=True)
class ReplicaInfo:
    """This process is one of ``replicas`` replicas of a Serve deployment; ``replica_id`` is Serve's."""

    replica_id: str
    replicas: int
    pid: int


_current: ReplicaInfo | None = None


def set_current(info: ReplicaInfo | None) -> None:
    global _current
    _current = info


def current() -> ReplicaInfo | None:
    return _current


def staging_prefix(tool_id: str) -> str:
    """The start of every staging file name this process's calls of ``tool_id`` make."""
    info = _current
    return f"{tool_id}-p{info.pid}-" if info is not None else f"{tool_id}-"


def dead_replica_staging(tool_id: str, name: str) -> bool:
    """True when ``name`` is a staging file of a replica of ``tool_id`` whose process is gone.

    A file of this very process (a pid the OS reused) counts as dead too: this process has
    only just started and has made none yet. Files of a live sibling replica are kept.
    """
    match = re.match(re.escape(tool_id) + r"-p(\d{1,10})-", name)
    if match is None:
        return False
    pid = int(match.group(1))
    return pid == os.getpid() or not pid_alive(pid)

"""Whether a process on this host is alive: the mesh's pids, Serve replicas' staging files.

A leaf module (no imports of ours), so that the mesh and the services can both use it.
"""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True while process ``pid`` runs here; a zombie (exited, not yet reaped) does not count."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); check its state where /proc exists.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True

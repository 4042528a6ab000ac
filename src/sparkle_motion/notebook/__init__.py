"""Notebook front end (``pip install -e .[notebook]``): control panel, preflight, previews, retention.

``notebooks/sparkle_motion.ipynb`` uses these; see docs/notebook.md.
"""

from sparkle_motion.notebook.control_panel import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ControlPanel,
    PanelActionError,
    PanelMessage,
    create_control_panel,
)
from sparkle_motion.notebook.plan_review import PlanReview
from sparkle_motion.notebook.preflight import (
    CheckResult,
    MeshReadiness,
    PreflightReport,
    in_colab,
    mesh_readiness,
    mount_drive,
    resolve_home,
    run_preflight,
    start_mesh,
)
from sparkle_motion.notebook.retention import PruneResult, RetentionError, prune_runs

__all__ = [
    "ACTIVE_STATUSES", "FINAL_STATUSES", "CheckResult", "ControlPanel", "MeshReadiness", "PanelActionError",
    "PanelMessage", "PlanReview", "PreflightReport", "PruneResult", "RetentionError", "create_control_panel",
    "in_colab", "mesh_readiness", "mount_drive", "prune_runs", "resolve_home", "run_preflight", "start_mesh",
]

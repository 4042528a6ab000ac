"""FunctionTool framework: ToolSpec → FastAPI app, ToolContext, ToolClient, serve.

See docs/architecture.md ("FunctionTool framework") for the contract.
"""

from sparkle_motion.services.app import create_app
from sparkle_motion.services.client import ToolClient
from sparkle_motion.services.common import install_common
from sparkle_motion.services.context import CancelToken, ToolContext
from sparkle_motion.services.models import ToolRequest, ToolResponse
from sparkle_motion.services.readiness import Readiness
from sparkle_motion.services.serve import serve
from sparkle_motion.services.spec import ToolSpec

__all__ = [
    "Readiness",
    "ToolClient",
    "CancelToken",
    "ToolContext",
    "ToolRequest",
    "ToolResponse",
    "ToolSpec",
    "create_app",
    "install_common",
    "serve",
]

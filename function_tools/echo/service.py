"""SPEC for the test-only echo tool (not registered in the mesh)."""

from function_tools.echo.models import EchoRequest, EchoResponse
from sparkle_motion.services import ToolSpec

SPEC = ToolSpec(
    tool_id="echo",
    version="1.0.0",
    request_model=EchoRequest,
    response_model=EchoResponse,
    backends={
        "echo": "function_tools.echo.backend:EchoBackend",
        "slow": "function_tools.echo.backend:SlowEchoBackend",
        "broken": "function_tools.echo.backend:BrokenEchoBackend",
    },
    max_concurrency=1,
    busy_wait_s=0.2,
    description="Echoes text (plus text artifacts) and stores the result; framework tests only.",
)

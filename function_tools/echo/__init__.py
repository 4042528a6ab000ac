"""A tiny FunctionTool used only by the framework's own tests.

It is not in configs/tool_registry.yaml and never runs in the mesh; tests serve
it by module path: ``python -m sparkle_motion.services function_tools.echo.service --port P``.
Backend choice (``SPARKLE_ECHO_BACKEND``): ``echo`` (default), ``slow`` (load
waits for a release file, to observe warm-up), ``broken`` (load fails).
"""

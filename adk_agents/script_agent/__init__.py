from . import agent  # noqa: F401  (adk's loader imports the package, then reads agent.root_agent)

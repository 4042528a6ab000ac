"""production_agent for `adk web adk_agents` / `adk api_server adk_agents`.

Send a MoviePlan JSON as the message (optionally {"plan": {...}, "qa_mode": "skip"}):
the workflow records a run in the registry and drives the FunctionTools of the
running mesh (`sparkle-motion up`), exactly as the production_agent service does.
"""

from sparkle_motion.agents.production_workflow import production_workflow

root_agent = production_workflow

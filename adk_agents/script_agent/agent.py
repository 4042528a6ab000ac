"""script_agent for `adk web adk_agents` / `adk api_server adk_agents`.

Type a film idea as the message, optionally with a JSON controls object such as
{"shots": 4, "duration_s": 20, "style": "noir", "seed": 7}; the agent answers with
the MoviePlan JSON (also stored in session state under "movie_plan").  The model
is the active profile's (SPARKLE_PROFILE, default cpu → sparkle-offline-planner,
which needs no network); importing this module registers that model with ADK.
"""

from sparkle_motion.agents.script_agent import build_script_agent

root_agent = build_script_agent()

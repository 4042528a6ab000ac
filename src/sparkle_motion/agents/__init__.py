"""ADK agents: script_agent (idea → MoviePlan) and production_agent (MoviePlan → film).

Kept free of imports on purpose: the agent modules pull in google-adk, which a
tool process or a quick CLI command should not pay for.  Import what you need:

* ``sparkle_motion.agents.script_agent`` — ``generate_plan``, ``build_script_agent``
* ``sparkle_motion.agents.offline_planner`` — the ``sparkle-offline-planner`` model
  (its prompt protocol in ``script_protocol``, its words in ``planner_lexicon``,
  its reading of an idea in ``idea_analysis``)
* ``sparkle_motion.agents.script_service`` — script_agent's HTTP service (port 5001)
"""

"""generate_plan: the ADK LlmAgent + Runner path, the bounded validate-and-retry loop, model checks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import AsyncGenerator, ClassVar

import pytest
from google.adk.models.base_llm import BaseLlm
from google.adk.models.google_llm import Gemini
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.models.registry import LLMRegistry
from google.genai import types

from sparkle_motion.agents.offline_planner import plan_from_request
from sparkle_motion.agents.script_agent import (
    AGENT_NAME,
    MAX_ATTEMPTS,
    OUTPUT_KEY,
    PlanRequest,
    build_script_agent,
    generate_plan,
    generate_plan_result,
    resolve_model,
)
from sparkle_motion.agents.script_protocol import FEEDBACK_MARKER, PLANNER_MODEL
from sparkle_motion.config import load_settings
from sparkle_motion.errors import ConfigError, InvalidInputError, PlanValidationError
from sparkle_motion.plan import MoviePlan


class _ScriptedLlm(BaseLlm):
    """Test seam: answers with the offline planner's plan, broken on the first ``bad_answers`` calls."""

    calls: ClassVar[list[LlmRequest]] = []
    bad_answers: ClassVar[int] = 0

    @classmethod
    def supported_models(cls) -> list[str]:
        return [r"test-scripted-planner"]

    async def generate_content_async(self, llm_request: LlmRequest, stream: bool = False,
                                     ) -> AsyncGenerator[LlmResponse, None]:
        type(self).calls.append(llm_request.model_copy(deep=True))
        plan = plan_from_request(llm_request)
        if len(type(self).calls) <= type(self).bad_answers:
            # Two real mistakes: the timeline starts late and a shot skips its keyframe.
            plan["dialogue_timeline"][0]["start_time_sec"] += 0.5
            plan["shots"][1]["start_base_image_id"] = "frame_999"
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=json.dumps(plan))]))


LLMRegistry.register(_ScriptedLlm)


@pytest.fixture
def scripted():
    _ScriptedLlm.calls = []
    yield _ScriptedLlm
    _ScriptedLlm.calls = []
    _ScriptedLlm.bad_answers = 0


def _user_texts(request: LlmRequest) -> list[str]:
    return ["".join(p.text or "" for p in c.parts) for c in request.contents if c.role == "user"]


def test_generate_plan_with_the_offline_planner() -> None:
    plan = generate_plan("Ines and Hugo repair a carousel in a snowy park at dusk.", shots=4, duration_s=18.5,
                         seed=21, style="watercolor", title="Carousel")
    assert isinstance(plan, MoviePlan)
    assert plan.title == "Carousel"
    assert len(plan.shots) == 4 and plan.runtime_s == pytest.approx(18.5, abs=1e-3)
    assert plan.metadata.seed == 21 and plan.metadata.source == PLANNER_MODEL
    assert {"Ines", "Hugo"} <= {c.name for c in plan.characters}
    assert all("watercolor" in image.prompt for image in plan.base_images)
    # Plain call without options: the profile's model (cpu → offline planner), deterministic.
    assert generate_plan("Ines and Hugo repair a carousel.") == generate_plan("Ines and Hugo repair a carousel.")


def test_script_agent_loads_the_planner_only_when_it_is_the_model() -> None:
    # script_agent needs the prompt protocol, not the planner; resolve_model imports the
    # planner (which registers it with ADK) once it is the chosen model. A fresh process,
    # since this module imports the planner itself.
    code = (
        "import sys\n"
        "from sparkle_motion.agents import script_agent\n"
        "assert 'sparkle_motion.agents.offline_planner' not in sys.modules\n"
        "plan = script_agent.generate_plan('Omar sells lanterns at a night market.', seed=3)\n"
        f"assert plan.metadata.source == {PLANNER_MODEL!r}, plan.metadata.source\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_agent_is_an_adk_llm_agent_with_the_plan_schema() -> None:
    agent = build_script_agent(PLANNER_MODEL)
    assert agent.name == AGENT_NAME
    assert agent.output_schema is MoviePlan
    assert agent.output_key == OUTPUT_KEY
    result = generate_plan_result(PlanRequest(prompt="Omar sells lanterns at a night market.", seed=3))
    assert result.attempts == 1 and result.violations_by_attempt == []
    assert json.loads(result.raw_model_output)["title"] == result.plan.title


def test_invalid_answers_go_back_to_the_model_then_a_valid_plan_is_accepted(scripted) -> None:
    scripted.bad_answers = 1
    result = generate_plan_result(PlanRequest(prompt="Lena and Omar fix a tram in Prague.", shots=3, seed=4),
                                  model="test-scripted-planner")
    assert result.attempts == 2
    assert len(scripted.calls) == 2
    # The system instruction carries the rules; the second call carries the violations.
    system = scripted.calls[0].config.system_instruction
    assert "len(shots) + 1" in system and "RENDER_PROFILE (JSON):" in system
    feedback = _user_texts(scripted.calls[1])[-1]
    assert feedback.startswith(FEEDBACK_MARKER)
    assert "shots[1].start_base_image_id" in feedback
    assert "dialogue_timeline" in feedback
    assert "Your previous answer was:" in feedback  # ADK's output_schema rejected it before the session saw it
    paths = {v["path"] for v in result.violations_by_attempt[0]}
    assert "shots[1].start_base_image_id" in paths
    assert result.plan.shots[1].start_base_image_id == "frame_001"


def test_retries_are_bounded_at_three_attempts(scripted) -> None:
    scripted.bad_answers = 99
    with pytest.raises(PlanValidationError) as caught:
        generate_plan("Lena and Omar fix a tram in Prague.", seed=4, model="test-scripted-planner")
    assert len(scripted.calls) == MAX_ATTEMPTS == 3
    error = caught.value
    assert "3 attempts" in error.message and "shots[1].start_base_image_id" in error.message
    assert any(d["path"] == "shots[1].start_base_image_id" for d in error.details)
    assert error.context["attempts"] == 3 and len(error.context["violations_by_attempt"]) == 3
    assert [t.startswith(FEEDBACK_MARKER) for t in _user_texts(scripted.calls[2])] == [False, True, True]


def test_gemini_without_a_key_fails_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    called = []

    async def record(self, llm_request, stream=False):
        called.append(llm_request)
        yield LlmResponse()

    monkeypatch.setattr(Gemini, "generate_content_async", record)
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY") as caught:
        generate_plan("A quiet idea.", model="gemini-2.5-flash")
    assert caught.value.field == "GOOGLE_API_KEY"
    # The gpu profile's default (gemini) fails the same way, from the profile alone.
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY"):
        generate_plan("A quiet idea.", settings=load_settings({}, profile="gpu"))
    assert called == []
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key-not-used")
    assert resolve_model("gemini-2.5-flash") == "gemini-2.5-flash"


def test_litellm_models_need_the_optional_extra() -> None:
    if importlib.util.find_spec("litellm") is None:
        with pytest.raises(ConfigError, match=r"pip install sparkle-motion\[litellm\]"):
            generate_plan("A quiet idea.", model="openai/gpt-4o-mini")
    else:
        from google.adk.models.lite_llm import LiteLlm

        model = resolve_model("openai/gpt-4o-mini")
        assert isinstance(model, LiteLlm) and model.model == "openai/gpt-4o-mini"


def test_unknown_model_and_mismatched_backend_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        resolve_model("no-such-model")
    settings = load_settings({"SPARKLE_SCRIPT_AGENT_BACKEND": "gemini"}, profile="cpu")
    with pytest.raises(ConfigError, match="does not fit model 'sparkle-offline-planner'"):
        resolve_model(settings=settings)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"),
    ({"prompt": "idea", "shots": 0}, "shots"),
    ({"prompt": "idea", "shots": 13}, "shots"),
    ({"prompt": "idea", "duration_s": 3}, "duration_s"),
    ({"prompt": "idea", "duration_s": 301}, "duration_s"),
    ({"prompt": "idea", "shots": 2, "duration_s": 150}, "duration_s"),
    ({"prompt": "idea", "seed": -1}, "seed"),
    ({"prompt": "idea", "style": " "}, "style"),
])
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    prompt = kwargs.pop("prompt")
    with pytest.raises(InvalidInputError) as caught:
        generate_plan(prompt, **kwargs)
    assert caught.value.field == field

"""sparkle-offline-planner: a real planner (valid, idea-driven, deterministic), read through ADK's request types."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from google.adk.models.llm_request import LlmRequest
from google.adk.models.registry import LLMRegistry
from google.genai import types

from sparkle_motion.agents.idea_analysis import analyze_idea
from sparkle_motion.agents.offline_planner import (
    LINE_MARGIN_MS,
    WORDS_PER_SECOND,
    OfflinePlanner,
    OfflinePlannerLlm,
)
from sparkle_motion.agents.planner_lexicon import CAMERA_MOVES, STYLE_LOOKS
from sparkle_motion.agents.script_protocol import (
    PLANNER_MODEL,
    PlanControls,
    format_plan_request,
    format_render_profile,
    format_validation_feedback,
    parse_plan_request,
    parse_validation_feedback,
)
from sparkle_motion.plan import plan_violations, validate_plan

IDEAS = [
    "Two friends on a neon rooftop reconcile before sunrise.",
    "Ava, a street photographer, and Miko, a DJ, argue about the last train in Lisbon at midnight.",
    "A retired detective searches the foggy harbor for a missing letter.",
    "Detective Rhodes interrogates a nervous baker in a small kitchen.",
    "A robot learns to paint in an abandoned greenhouse.",
    "The lighthouse at the end of the world.",
    "Three sisters bake a cake for their grandmother during a snowstorm.",
    "An astronaut and her cat drift toward Mars aboard a failing spaceship.",
    "Jonah teaches his daughter Lily to sail on a windy lake.",
    "A lonely ghost haunts the library at midnight, waiting for a reader.",
    "Priya and Marcus open a tiny cafe on a rainy street corner.",
    "A knight and a dragon negotiate a truce in a burning castle.",
    "Two rival chefs cook for a king in a palace kitchen.",
    "A courier races across Tokyo at night to deliver a mysterious package.",
    "Grandpa Felix repairs an old radio in his garage while a storm rolls in.",
    "A couple dances alone in an empty ballroom after the party.",
    "The last bus stop in the desert, where a stranger waits with a suitcase.",
    "Kenji and Sofia search the forest for a lost dog before nightfall.",
    "A pirate captain buries a treasure on a tropical island at dawn.",
    "Nora confesses a secret to her brother on a long train ride.",
    "A young hacker breaks into a corporate tower during a blackout.",
    "Twins discover a hidden door in their grandmother's attic.",
    "A farmer and his son wait for rain in a dusty field.",
    "Inspector Valdez questions a magician backstage at a theater.",
    "Rosa teaches a robot how to laugh in a cluttered workshop.",
    "A soldier returns home to a quiet village in the snow.",
    "Two astronauts fix a broken antenna on the moon.",
    "A street musician plays for a crowd of one in a subway station at midnight.",
    "Maya and Theo build a raft to escape a flooded city.",
    "a kid and a fox explore a misty meadow in the morning",
]

OPTIONS = [
    PlanControls(),
    PlanControls(shots=1, duration_s=4),
    PlanControls(shots=12, duration_s=4),
    PlanControls(shots=5, duration_s=300),
    PlanControls(shots=3, duration_s=12.345, style="noir", seed=42, title="A Title"),
    PlanControls(duration_s=60),
    PlanControls(shots=8),
    PlanControls(style="pastel dreamlike", seed=0),
]


def _plan(idea: str, controls: PlanControls = PlanControls(), **kw) -> dict:
    return OfflinePlanner(idea, controls, **kw).compose()


def _shot_bounds(plan: dict) -> list[tuple[float, float]]:
    bounds, start = [], 0.0
    for shot in plan["shots"]:
        bounds.append((start, start + shot["duration_sec"]))
        start += shot["duration_sec"]
    return bounds


@pytest.mark.parametrize("idea", IDEAS)
def test_every_idea_gives_a_valid_plan_that_honours_every_option(idea: str) -> None:
    for index, controls in enumerate(OPTIONS):
        plan = _plan(idea, controls)
        assert plan_violations(plan) == [], (idea, controls)
        validated = validate_plan(plan)
        shots = len(validated.shots)
        if controls.shots is not None:
            assert shots == controls.shots
        else:
            assert 3 <= shots <= 5 or (controls.duration_s or 0) > 240
        if controls.duration_s is not None:
            assert validated.runtime_s == pytest.approx(controls.duration_s, abs=1e-3)
        assert len(validated.base_images) == shots + 1
        lines = validated.dialogue_lines
        assert 2 <= len(lines) <= 6 or (len(lines) >= 1 and shots == 1), (idea, controls, len(lines))
        # Each line sits inside one shot, and that shot is a talking close-up.
        bounds = _shot_bounds(plan)
        talking = set()
        for line in lines:
            inside = [i for i, (a, b) in enumerate(bounds)
                      if a - 1e-6 <= line.start_time_sec and line.end_time_sec <= b + 1e-6]
            assert inside, (line, bounds)
            talking.add(inside[0])
        assert {i for i, s in enumerate(validated.shots) if s.is_talking_closeup} == talking
        # Distinct voices.
        voices = [c.voice_profile for c in validated.characters]
        assert all(v.language == "en-US" for v in voices)
        assert len({v.voice_id for v in voices}) == len(voices)
        assert len({v.pitch for v in voices}) == len(voices)
        assert validated.metadata.source == PLANNER_MODEL
        assert validated.metadata.model_extra["planned_offline"] is True
        if controls.seed is not None:
            assert validated.metadata.seed == controls.seed
        if controls.title:
            assert validated.title == controls.title


def test_line_durations_follow_word_count() -> None:
    plan = validate_plan(_plan(IDEAS[1]))
    for line in plan.dialogue_lines:
        words = len(line.text.split())
        expected = words / WORDS_PER_SECOND + LINE_MARGIN_MS / 1000
        assert expected <= line.duration_sec < expected + 0.011


def test_names_in_the_idea_become_characters_and_speak() -> None:
    cases = {
        IDEAS[1]: {"Ava", "Miko"},
        IDEAS[3]: {"Rhodes"},
        IDEAS[8]: {"Jonah", "Lily"},
        IDEAS[10]: {"Priya", "Marcus"},
        IDEAS[17]: {"Kenji", "Sofia"},
        IDEAS[23]: {"Valdez"},
        IDEAS[28]: {"Maya", "Theo"},
    }
    for idea, names in cases.items():
        plan = validate_plan(_plan(idea))
        assert names <= {c.name for c in plan.characters}, idea
        spoken = " ".join(line.text for line in plan.dialogue_lines)
        speakers = {plan.character(line.character_id).name for line in plan.dialogue_lines}
        assert speakers & names, idea
        assert any(name in spoken for c in plan.characters for name in [c.name]), idea


def test_sentence_initial_and_common_words_are_not_names() -> None:
    analysis = analyze_idea("Rain falls on Tokyo. Suddenly two friends meet at the station. The End.")
    names = [p.name for p in analysis.people if p.name]
    assert names == []
    assert [p.role for p in analysis.people] == ["friend", "friend"]
    assert analysis.places == ["Tokyo"]
    assert analysis.weather == "rain"
    assert analysis.setting == "station"


def test_roles_are_counted_and_invented_characters_are_distinct() -> None:
    analysis = analyze_idea("Three sisters bake a cake for their grandmother during a snowstorm.")
    assert [p.role for p in analysis.people] == ["sister", "sister", "sister", "grandmother"]
    plan = validate_plan(_plan("Three sisters bake a cake for their grandmother during a snowstorm."))
    assert len(plan.characters) == 4
    assert len({c.name for c in plan.characters}) == 4
    assert all("sister" in c.description or "grandmother" in c.description for c in plan.characters)
    # Apposition gives the role to the name instead of inventing a second person.
    ava = analyze_idea("Ava, a street photographer, meets Miko on a pier.").people
    assert [(p.name, p.role) for p in ava] == [("Ava", "photographer"), ("Miko", None)]


def test_prompts_use_the_setting_time_weather_and_style() -> None:
    plan = validate_plan(_plan("A retired detective searches the foggy harbor for a missing letter at night.",
                               PlanControls(style="noir")))
    for image in plan.base_images:
        assert "harbor" in image.prompt
        assert "at night" in image.prompt
        assert "fog" in image.prompt
        assert STYLE_LOOKS["noir"]["palette"] in image.prompt
        assert "saturated colour" in (image.negative_prompt or "")
    assert all("harbor" in shot.setting for shot in plan.shots)
    words = " ".join(line.text for line in plan.dialogue_lines)
    assert "letter" in words or "harbor" in words


def test_camera_moves_vary() -> None:
    for idea in IDEAS[:10]:
        plan = validate_plan(_plan(idea, PlanControls(shots=5)))
        moves = [shot.motion_prompt.split(":", 1)[0] for shot in plan.shots]
        assert all(m in CAMERA_MOVES for m in moves)
        assert all(a != b for a, b in zip(moves, moves[1:])), moves
        assert len(set(moves)) >= 4, moves


def test_same_request_same_plan_and_different_ideas_differ() -> None:
    for idea in IDEAS[:5]:
        assert _plan(idea, PlanControls(seed=7)) == _plan(idea, PlanControls(seed=7))
        assert _plan(idea) == _plan(idea)  # no seed: derived from the idea, still stable
        assert _plan(idea, PlanControls(seed=1)) != _plan(idea, PlanControls(seed=2))
    plans = [_plan(idea, PlanControls(seed=5)) for idea in IDEAS]
    for key in ("title", "characters", "base_images", "dialogue_timeline"):
        distinct = {json.dumps(p[key], sort_keys=True) for p in plans}
        assert len(distinct) >= len(IDEAS) - 3, key
    texts = [" ".join(e["text"] for e in p["dialogue_timeline"] if e["type"] == "dialogue") for p in plans]
    assert len(set(texts)) == len(texts)


def test_request_protocol_round_trip_and_hand_typed_controls() -> None:
    controls = PlanControls(title="Night Shift", shots=4, duration_s=22.5, seed=9, style="noir")
    idea, parsed = parse_plan_request(format_plan_request("A cop and a baker share coffee.", controls))
    assert idea == "A cop and a baker share coffee."
    assert parsed == controls
    # Typed by hand in `adk web`: a JSON object anywhere in the message, fenced or not.
    idea, parsed = parse_plan_request('A cop and a baker share coffee. ```json\n{"shots": 40, "style": "anime"}\n```')
    assert idea == "A cop and a baker share coffee."
    assert parsed.shots == 12 and parsed.style == "anime"
    idea, parsed = parse_plan_request("Mia finds a map {\"treasure\": true} in the attic")
    assert parsed == PlanControls() and "{" in idea  # not a controls block: left in the idea
    with pytest.raises(ValueError, match="ask for at least 2 shots"):
        PlanControls(shots=1, duration_s=61)
    violations = [{"path": "shots[0].duration_sec", "message": "must be > 0"},
                  {"path": "dialogue_timeline", "message": "ends at 9 s, but the shots run 10 s"}]
    text = format_validation_feedback(violations, attempt=1, max_attempts=3, previous_output='{"title": "x"}')
    assert parse_validation_feedback(text) == violations


def _request(*turns: tuple[str, str], system: str | None = None) -> LlmRequest:
    request = LlmRequest(model=PLANNER_MODEL,
                         contents=[types.Content(role=r, parts=[types.Part(text=t)]) for r, t in turns])
    if system is not None:
        request.config.system_instruction = system
    return request


def _answer(llm, request: LlmRequest):
    async def collect():
        return [r async for r in llm.generate_content_async(request)]

    return asyncio.run(collect())


def test_registered_in_adk_and_reads_the_llm_request() -> None:
    llm = LLMRegistry.new_llm(PLANNER_MODEL)
    assert isinstance(llm, OfflinePlannerLlm)
    assert LLMRegistry.resolve(PLANNER_MODEL) is OfflinePlannerLlm
    with pytest.raises(ValueError):
        LLMRegistry.resolve(PLANNER_MODEL + "-x")  # the regex matches the exact name only

    render = {"video": {"model_id": "wan-2.1", "fps": 16}, "images": {"model_id": "auto"}}
    first = format_plan_request("Lena and Omar fix a tram in Prague", PlanControls(shots=3, seed=4))
    (response,) = _answer(llm, _request(("user", first), system=f"Write plans.\n{format_render_profile(render)}"))
    plan = validate_plan(json.loads(response.content.parts[0].text))
    assert plan.render_profile.video.model_id == "wan-2.1" and plan.render_profile.video.fps == 16
    assert len(plan.shots) == 3 and plan.metadata.seed == 4
    assert "revision" not in plan.metadata.model_extra

    # A retry: the planner answers the original request and records the feedback it read.
    feedback = format_validation_feedback([{"path": "shots[1].duration_sec", "message": "must be <= 60"}],
                                          attempt=1, max_attempts=3)
    (retry,) = _answer(llm, _request(("user", first), ("model", response.content.parts[0].text),
                                     ("user", feedback)))
    revised = validate_plan(json.loads(retry.content.parts[0].text))
    assert revised.metadata.model_extra["revision"] == 1
    assert revised.metadata.model_extra["addressed_violations"] == ["shots[1].duration_sec"]
    assert revised.shots == plan.shots

    # No idea at all: an error response, not an invented film.
    (empty,) = _answer(llm, _request(("user", '{"shots": 3}')))
    assert empty.error_code == "INVALID_REQUEST" and "idea" in empty.error_message


def test_dialogue_fits_the_tightest_runtime() -> None:
    plan = validate_plan(_plan("Ava and Miko talk about everything that happened last summer on the pier.",
                               PlanControls(shots=12, duration_s=4)))
    assert plan.runtime_s == pytest.approx(4.0, abs=1e-3)
    assert len(plan.dialogue_lines) == 2
    assert all(re.fullmatch(r"[\w ,.'?]+", line.text) for line in plan.dialogue_lines)


@pytest.mark.parametrize(("idea", "place"), [
    ("Two astronauts argue about the last oxygen tank", "space station"),
    ("A chef and a waiter race the dinner rush", "restaurant kitchen"),
    ("A detective follows a cat through Paris at night", "streets of Paris"),
])
def test_an_idea_without_a_place_word_gets_the_place_its_people_or_names_imply(idea, place):
    plan = OfflinePlanner(idea, PlanControls()).compose()
    prompts = " ".join(b["prompt"] for b in plan["base_images"])
    assert place in prompts
    assert f"in {place.split()[-1]} in" not in prompts  # "streets of Paris in Paris" reads badly


def test_family_words_are_names():
    plan = OfflinePlanner("Grandma teaches Leo to bake bread on a snowy morning", PlanControls()).compose()
    names = [c["name"] for c in plan["characters"]]
    assert names[:2] == ["Grandma", "Leo"]
    assert plan["characters"][0]["description"].startswith("Grandma, a grandmother")
    assert "kitchen" in plan["base_images"][0]["prompt"]


def test_prepositions_are_not_objects_and_articles_agree():
    plan = OfflinePlanner("An old fisherman tells his granddaughter about the whale at sunset", PlanControls()).compose()
    assert "About" not in plan["title"]
    text = json.dumps(plan)
    assert not re.search(r"\ba [aeiou]", text), re.search(r"\ba [aeiou]\w*", text).group(0)

"""Words belong to the shot they are mostly in, clipped at the cut — over hundreds of generated short plans.

Each plan comes from the offline planner (varied ideas, seeds, shot counts and
durations), each dialogue line is spoken by the real eSpeak NG engine of
tts_chatterbox's `espeak` backend (in process: a few ms a line, where the cpu
profile's neural `kokoro` voice would take minutes for the whole sweep; both give
word timings in the same response shape), and its words are
placed on the timeline where the production run's stitch puts them. What
``words_by_shot`` hands to lipsync must then be accepted by lipsync's own
request model and lie inside each shot's audio.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from function_tools.lipsync_wav2lip.models import LipsyncOptions
from function_tools.tts_chatterbox.espeak import installed_variants, synthesize_speech
from function_tools.tts_chatterbox.espeak_engine import open_synthesizer
from function_tools.tts_chatterbox.models import TtsVoice
from function_tools.tts_chatterbox.voices import LanguageIndex, design_voice
from sparkle_motion.agents.offline_planner import OfflinePlanner
from sparkle_motion.agents.dialogue_stage import TIMELINE_SAMPLE_RATE
from sparkle_motion.agents.production_estimate import render_geometry
from sparkle_motion.agents.script_protocol import PlanControls
from sparkle_motion.agents.shot_timing import frame_counts, shot_bounds, words_by_shot
from sparkle_motion.config import load_settings
from sparkle_motion.plan import MoviePlan, validate_plan

SR = TIMELINE_SAMPLE_RATE
IDEAS = [
    "A lighthouse keeper befriends a storm",
    "Two friends on a neon rooftop reconcile before sunrise.",
    "Ava and Miko argue about the last train in Lisbon at midnight.",
    "A robot learns to paint in an abandoned greenhouse.",
    "Detective Rhodes interrogates a nervous baker in a small kitchen.",
    "A knight and a dragon negotiate a truce in a burning castle.",
    "Priya and Marcus open a tiny cafe on a rainy street corner.",
    "An astronaut and her cat drift toward Mars.",
    "Grandpa Felix repairs an old radio while a storm rolls in.",
    "A courier races across Tokyo at night.",
]
SHOTS_AND_DURATIONS = [(1, 4.0), (2, 6.0), (2, 8.0), (2, 9.5), (3, 7.0), (3, 10.0), (4, 12.0)]
SEEDS = [1, 2, 3]
MIN_PLANS = 200


@pytest.fixture(scope="module")
def speaker() -> Any:
    synth = open_synthesizer()
    languages = LanguageIndex(synth.voices)
    variants = frozenset(installed_variants(synth))

    def speak(plan: MoviePlan) -> list[dict[str, Any]]:
        """The plan's words on the film's timeline, as the production run's stitch places them."""
        characters = {c.id: c for c in plan.characters}
        seed = int(plan.metadata.seed or 0)
        words = []
        for index, entry in enumerate(plan.dialogue_timeline):
            if entry.type != "dialogue":
                continue
            character = characters[entry.character_id]
            voice = TtsVoice(character_id=character.id, character_name=character.name,
                             **character.voice_profile.model_dump(exclude_none=True))
            speech = synthesize_speech(synth, entry.text, design_voice(voice, languages, variants),
                                       seed=seed + index, sample_rate=SR)
            offset = round(entry.start_time_sec * SR) / SR
            words += [{"word": w.word, "start_s": w.start_s + offset, "end_s": w.end_s + offset}
                      for w in speech.words]
        return words

    yield speak
    synth.close()


def generated_plans() -> list[MoviePlan]:
    plans = []
    for idea, (shots, duration), seed in itertools.product(IDEAS, SHOTS_AND_DURATIONS, SEEDS):
        try:
            controls = PlanControls(shots=shots, duration_s=duration, seed=seed)
        except ValidationError:
            continue  # a duration too short for that many shots is refused before planning
        plans.append(validate_plan(OfflinePlanner(idea, controls).compose()))
    return plans


def overlap(word: dict[str, Any], bounds: tuple[float, float]) -> float:
    return min(word["end_s"], bounds[1]) - max(word["start_s"], bounds[0])


def test_every_word_lies_in_its_shots_audio_and_in_the_shot_holding_most_of_it(speaker: Any) -> None:
    settings = load_settings({})
    plans = generated_plans()
    assert len(plans) >= MIN_PLANS
    straddling = checked_words = 0
    for plan in plans:
        fps = render_geometry(plan, settings)[0]
        bounds = shot_bounds(frame_counts(plan, fps), fps)
        timeline_samples = round(plan.runtime_s * SR)
        words = speaker(plan)
        per_shot = words_by_shot(words, bounds, SR, timeline_samples)
        where = f"plan {plan.plan_id} ({len(plan.shots)} shots, {plan.runtime_s} s)"
        # Each word with sound inside the film is given to exactly one shot: the one holding most of it.
        assigned = [(i, w) for i, shot_words in enumerate(per_shot) for w in shot_words]
        expected = [w for w in words if max(overlap(w, b) for b in bounds) > 0]
        assert len(assigned) == len(expected), where
        for word in expected:
            overlaps = [overlap(word, b) for b in bounds]
            holders = [i for i, o in enumerate(overlaps) if o >= max(overlaps) - 1e-9]
            straddling += sum(1 for o in overlaps if o > 0) > 1
            match = [w for i in holders for w in per_shot[i]
                     if w["word"] == word["word"] and abs(w["start_s"] - max(0.0, word["start_s"] - bounds[i][0])) < 1e-5]
            assert match, f"{where}: {word} not in shot {holders}, which holds most of it"
        for i, ((start, end), shot_words) in enumerate(zip(bounds, per_shot)):
            audio_s = (min(round(end * SR), timeline_samples) - round(start * SR)) / SR
            for w in shot_words:
                checked_words += 1
                assert 0 <= w["start_s"] < w["end_s"] <= audio_s, f"{where}: shot {i} ({audio_s:.3f} s): {w}"
            # What lipsync's request model accepts, in the start order its backend requires.
            LipsyncOptions(fit="pad_or_trim", word_timings=shot_words)
            assert [w["start_s"] for w in shot_words] == sorted(w["start_s"] for w in shot_words)
    # The plans exercise the case at hand: words spoken across a cut.
    assert straddling >= 3 and checked_words > 1000, (straddling, checked_words)


def test_the_reported_plan_gives_goes_to_the_second_shot_clipped_at_the_cut(speaker: Any) -> None:
    """The issue's repro: 'goes' starts before the cut at 3.833 s and ends at 4.195 s."""
    plan = validate_plan(OfflinePlanner("A lighthouse keeper befriends a storm",
                                        PlanControls(shots=2, duration_s=8, seed=1)).compose())
    fps = render_geometry(plan, load_settings({}))[0]
    bounds = shot_bounds(frame_counts(plan, fps), fps)
    first, second = words_by_shot(speaker(plan), bounds, SR, round(plan.runtime_s * SR))
    first_audio_s = (round(bounds[0][1] * SR) - round(bounds[0][0] * SR)) / SR
    assert all(w["end_s"] <= first_audio_s for w in first)
    crossing = [w for w in first + second if w["start_s"] == 0.0 and w in second]
    assert crossing and crossing[0]["word"] == "goes"


def test_a_word_split_evenly_goes_to_the_earlier_shot_and_words_outside_are_dropped() -> None:
    bounds = [(0.0, 1.0), (1.0, 2.0)]
    words = [{"word": "even", "start_s": 0.9, "end_s": 1.1}, {"word": "late", "start_s": 2.0, "end_s": 2.5},
             {"word": "flat", "start_s": 0.5, "end_s": 0.5}]
    first, second = words_by_shot(words, bounds, 100, 200)
    assert first == [{"word": "even", "start_s": 0.9, "end_s": 1.0}] and second == []

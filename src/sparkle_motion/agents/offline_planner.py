"""``sparkle-offline-planner``: an ADK model that writes a MoviePlan without an LLM.

It is registered in ADK's ``LLMRegistry``, so ``LlmAgent(model="sparkle-offline-planner")``
works like any hosted model: it reads the ``LlmRequest`` the agent builds (the
system instruction, the user's idea with its controls block and, on a retry, the
validation errors sent back) and answers with the plan as JSON text.

It is a planner, not a canned plan.  From the idea it extracts characters (names
written in the idea, or people invented from the roles it mentions), the setting,
time of day, weather, an object and a verb, and composes a 3–5 shot story arc
(setup, tension, resolution) with keyframe prompts, varied camera moves and
dialogue lines written from templates filled with those words.  Every choice is
drawn from a ``random.Random`` seeded by (idea, seed, controls): the same request
always yields the same plan, and different ideas yield different plans.

The prompt protocol it reads lives in ``script_protocol`` (shared with
script_agent), the words it knows in ``planner_lexicon`` and the reading of the
idea in ``idea_analysis``.  Importing this module registers the model with ADK.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.adk.models import LlmCapabilities
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.models.registry import LLMRegistry
from google.genai import types

from sparkle_motion.agents.idea_analysis import Person, analyze_idea
from sparkle_motion.agents.planner_lexicon import (
    CAMERA_MOVES,
    CONFLICT_VERBS,
    GENDERED_NAMES,
    LINE_TEMPLATES,
    NEGATIVE_BASE,
    SHORT_TEMPLATES,
    SOLO_TEMPLATES,
    STYLE_LOOKS,
    STYLE_SYNONYMS,
    VERBS,
    VOICE_STYLES,
    VOICES,
    WARDROBE,
)
from sparkle_motion.agents.script_protocol import (
    FEEDBACK_MARKER,
    MAX_SHOTS,
    PLANNER_MODEL,
    PlanControls,
    parse_plan_request,
    parse_render_profile,
    parse_validation_feedback,
)
from sparkle_motion.plan.models import AUTO_MODEL, MAX_SEED
from sparkle_motion.plan.rules import MAX_SHOT_DURATION_S

PLANNER_SOURCE = PLANNER_MODEL

# Speech pacing used to size dialogue slots: conversational English runs at about
# 150 words/min (2.5–2.7 words/s); the margin covers the TTS voice's attack/release.
WORDS_PER_SECOND = 2.6
LINE_MARGIN_MS = 350


@dataclass
class _Character:
    id: str
    name: str
    role: str | None
    gender: str
    description: str
    look: str
    voice: dict[str, Any]


@dataclass
class _Line:
    character: _Character
    text: str
    stage: str
    shot: int = 0
    duration_ms: int = 0


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug or "character"


def _third_person(verb: str) -> str:
    head, _, rest = verb.partition(" ")
    if re.search(r"(?:s|sh|ch|x|z|o)$", head):
        head += "es"
    elif re.search(r"[^aeiou]y$", head):
        head = head[:-1] + "ies"
    else:
        head += "s"
    return f"{head} {rest}".strip()


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def default_seed(idea: str) -> int:
    """The seed used when the caller gives none: stable per idea, so re-planning is reproducible."""
    return _stable_seed("seed", " ".join(idea.lower().split())) % (MAX_SEED + 1)


def _estimate_line_ms(text: str) -> int:
    words = max(1, len(text.split()))
    return int(math.ceil((words / WORDS_PER_SECOND * 1000 + LINE_MARGIN_MS) / 10.0) * 10)


def _distribute(total_ms: int, minimums: list[int], weights: list[float], cap_ms: int) -> list[int]:
    """Split ``total_ms`` into parts ≥ minimums, ≤ cap, the surplus shared by weight (water-filling)."""
    parts = list(minimums)
    remaining = total_ms - sum(parts)
    open_slots = [i for i in range(len(parts)) if parts[i] < cap_ms]
    while remaining > 0 and open_slots:
        weight_sum = sum(weights[i] for i in open_slots) or float(len(open_slots))
        given = 0
        for i in open_slots:
            share = int(remaining * (weights[i] or 1.0) / weight_sum)
            share = min(share, cap_ms - parts[i])
            parts[i] += share
            given += share
        remaining -= given
        open_slots = [i for i in open_slots if parts[i] < cap_ms]
        if given == 0:  # only rounding crumbs left: hand them out one millisecond at a time
            for i in open_slots:
                if remaining == 0:
                    break
                parts[i] += 1
                remaining -= 1
    return parts


class OfflinePlanner:
    """Composes a MoviePlan (as JSON-like data) from an idea and its controls."""

    def __init__(self, idea: str, controls: PlanControls, *, render_profile: Mapping[str, Any] | None = None,
                 feedback: Sequence[Mapping[str, str]] = (), revision: int = 0) -> None:
        self.idea = " ".join(idea.split())
        self.controls = controls
        self.seed = controls.seed if controls.seed is not None else default_seed(self.idea)
        self.render_profile = dict(render_profile or {"video": {"model_id": AUTO_MODEL}})
        self.feedback = list(feedback)
        self.revision = revision
        self.rng = random.Random(_stable_seed(self.idea, self.seed, controls.model_dump()))
        self.analysis = analyze_idea(self.idea)

    def _frame_phrase(self) -> str:
        return frame_phrase(self.render_profile.get("video") or {})

    # -- the world -------------------------------------------------------------------

    def _style(self) -> tuple[str, dict[str, Any]]:
        requested = self.controls.style or self.analysis.style
        if requested:
            key = STYLE_SYNONYMS.get(requested.lower(), requested.lower())
            if key in STYLE_LOOKS:
                return key, STYLE_LOOKS[key]
            # An unknown style is passed through as the look itself ("pastel dreamlike").
            return requested, {"palette": f"{requested} style", "negative": ""}
        return "cinematic", STYLE_LOOKS["cinematic"]

    def _characters(self) -> list[_Character]:
        people = list(self.analysis.people)
        if not people:
            # Nobody is named or described: invent a protagonist and a counterpart.
            people = [Person(None, "wanderer", "n"), Person(None, "stranger", "n")]
        taken = {p.name.split()[0].lower() for p in people if p.name}
        taken |= set(self.analysis.words)
        characters: list[_Character] = []
        used_ids: set[str] = set()
        voices_used: set[str] = set()
        rates = [0.92, 0.97, 1.0, 1.05, 1.1]
        self.rng.shuffle(rates)
        styles = list(VOICE_STYLES)
        self.rng.shuffle(styles)
        wardrobe = list(WARDROBE)
        self.rng.shuffle(wardrobe)
        for index, person in enumerate(people):
            gender = person.gender if person.gender in ("f", "m") else self.rng.choice(("f", "m"))
            if person.name:
                name = person.name
            else:
                pool = [n for n in GENDERED_NAMES[gender] + GENDERED_NAMES["n"] if n.lower() not in taken]
                name = self.rng.choice(pool)
                taken.add(name.lower())
            char_id = _slug(name.split()[0] if len(name.split()) > 1 and person.role is None else name)
            while char_id in used_ids:
                char_id = f"{char_id}_{index + 1}"
            used_ids.add(char_id)
            role_phrase = " ".join(w for w in (person.adjective, person.role) if w)
            garment = wardrobe[index % len(wardrobe)]
            look = f"{'woman' if gender == 'f' else 'man'} in {'an' if garment[0] in 'aeiou' else 'a'} {garment}"
            if role_phrase:
                article = "an" if role_phrase[0] in "aeiou" else "a"
                description = f"{name}, {article} {role_phrase}; {look}"
            else:
                description = f"{name}, at the heart of the story; {look}"
            voice_id = next(v for v in VOICES[gender] if v not in voices_used)
            voices_used.add(voice_id)
            # Distinct pitch per character: women above, men below the voice's base,
            # spread by index so two voices of one gender never coincide.
            pitch = (2.0 if gender == "f" else -2.0) + (1.5 if gender == "f" else -1.5) * index
            characters.append(_Character(
                id=char_id, name=name, role=person.role, gender=gender, description=description, look=look,
                voice={"voice_id": voice_id, "style": styles[index % len(styles)], "language": "en-US",
                       "rate": rates[index % len(rates)], "pitch": round(pitch, 1)},
            ))
        return characters

    def _shot_count(self) -> int:
        if self.controls.shots is not None:
            return self.controls.shots
        if self.controls.duration_s is not None and self.controls.duration_s > 5 * MAX_SHOT_DURATION_S * 0.8:
            return min(MAX_SHOTS, math.ceil(self.controls.duration_s / (MAX_SHOT_DURATION_S * 0.8)))
        richness = len(self.analysis.people) + (self.analysis.setting is not None) + (self.analysis.obj is not None)
        return min(5, max(3, 3 + (richness >= 3) + self.rng.randint(0, 1)))

    # -- words -------------------------------------------------------------------------

    def _words(self) -> dict[str, str]:
        a = self.analysis
        place = a.setting or self.rng.choice(("city street", "empty room", "quiet park", "old train station"))
        place_the = f"the {place}"
        if a.places and a.places[0] not in place:
            place_the = f"{place_the} in {a.places[0]}" if a.setting else a.places[0]
        obj = f"the {a.obj}" if a.obj else self.rng.choice(("the promise", "the letter", "the key", "the plan"))
        verb = a.verb or self.rng.choice(("finish this", "start over", "say goodbye"))
        vp = f"{verb} {obj}" if VERBS.get(verb) and a.obj else verb
        time_phrase = a.time_of_day or self._style()[1].get("time") or self.rng.choice(
            ("at dusk", "in the early morning", "at night", "in the late afternoon"))
        time_word = time_phrase.split()[-1]
        if time_word in ("hour", "sunrise") and "before" in time_phrase:
            time_word = "before sunrise"
        time_word = {"night": "tonight", "moonlight": "tonight"}.get(time_word, time_word)
        # The moment the story runs toward: what is "almost here" at the end.
        moments = (("sunrise", "Sunrise"), ("dawn", "Dawn"), ("daybreak", "Daybreak"), ("midnight", "Midnight"),
                   ("noon", "Noon"), ("midday", "Noon"), ("morning", "Noon"), ("night", "Morning"),
                   ("moonlight", "Morning"))
        moment = next((m for key, m in moments if key in time_phrase), "Nightfall")
        return {
            "place": place, "place_the": place_the, "place_the_cap": place_the[0].upper() + place_the[1:],
            "obj": obj, "obj_cap": obj[0].upper() + obj[1:], "verb": verb, "vp": vp,
            "time_phrase": time_phrase, "time_word": time_word, "moment": moment,
            "weather": a.weather or self._style()[1].get("weather") or "",
        }

    def _title(self, characters: list[_Character], words: dict[str, str]) -> str:
        if self.controls.title:
            return self.controls.title
        small = {"a", "an", "the", "at", "in", "of", "on", "and", "under", "to"}

        def title_case(text: str) -> str:
            out = [w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(text.split())]
            return " ".join(out)

        phrase = words["time_phrase"]
        if "before sunrise" in phrase:
            time_title = "before sunrise"
        elif phrase.startswith(("at ", "under ")):
            time_title = phrase
        else:
            time_title = "in the " + phrase.removeprefix("in the ")
        options = [title_case(f"{words['place']} {time_title}")]
        if self.analysis.obj:
            options.append(title_case(f"the {self.analysis.obj}"))
        if len(characters) >= 2:
            options.append(f"{characters[0].name} and {characters[1].name}")
        elif characters:
            options.append(title_case(f"{characters[0].name} and the {self.analysis.obj or words['place']}"))
        if self.analysis.places:
            options.append(title_case(f"{time_title} in {self.analysis.places[0]}"))
        return self.rng.choice(options)[:200]

    # -- story -------------------------------------------------------------------------

    def _slots_for_lines(self, count: int, talking_slots: list[int]) -> list[int]:
        """The shot each line goes to, in story order; lines share a shot only when shots run out."""
        slots = len(talking_slots)
        if count <= slots:
            if count == 1:
                return [talking_slots[-1]]
            # Spread over the film, always including the first and the last talking shot.
            return [talking_slots[round(j * (slots - 1) / (count - 1))] for j in range(count)]
        per_shot = math.ceil(count / slots)
        return [talking_slots[min(j // per_shot, slots - 1)] for j in range(count)]

    def _lines(self, characters: list[_Character], words: dict[str, str], slots: list[int], short: bool,
               ) -> list[_Line]:
        count = len(slots)
        stages = ["setup"] * max(1, round(count / 3)) + ["tension"] * max(1, round(count / 3))
        stages += ["resolution"] * (count - len(stages))
        stages = stages[:count]
        if "resolution" not in stages:
            stages[-1] = "resolution"
        solo = len(characters) == 1
        bank = SHORT_TEMPLATES if short else (SOLO_TEMPLATES if solo else LINE_TEMPLATES)
        conflict = words["verb"] in CONFLICT_VERBS
        remaining: dict[str, list[str]] = {}
        for stage, options in bank.items():
            # Nobody resolves a story by agreeing to keep fighting.
            usable = [t for t in options if not (conflict and stage == "resolution" and "{vp}" in t)
                      # Lines about an object or action the idea never mentioned would invent a plot.
                      and not ("{obj" in t and not self.analysis.obj)
                      and not ("{vp}" in t and not self.analysis.verb)]
            remaining[stage] = usable or list(options)
            self.rng.shuffle(remaining[stage])
            # Lines that name the idea's place, object or action come first (pop() takes from the end).
            remaining[stage].sort(key=lambda t: any(k in t for k in ("{obj", "{vp}", "{place", "{moment}", "{other}")))
        # One speaker per shot (a talking close-up shows one face), alternating shot by shot.
        shot_order = list(dict.fromkeys(slots))
        speaker_of = {shot: characters[k % len(characters)] for k, shot in enumerate(shot_order)}
        lines: list[_Line] = []
        for index, stage in enumerate(stages):
            speaker = speaker_of[slots[index]]
            listener = characters[(characters.index(speaker) + 1) % len(characters)]
            if not remaining[stage]:
                remaining[stage] = list(bank[stage])
            template = remaining[stage].pop()
            text = template.format(other=listener.name.split()[0], **words)
            text = re.sub(r"\s+", " ", text).strip()
            lines.append(_Line(speaker, text[0].upper() + text[1:], stage, shot=slots[index]))
        return lines

    def _line_count(self, characters: list[_Character], shots: int) -> int:
        base = 2 + min(len(characters), 3) + (shots >= 4) - 1 + self.rng.randint(0, 1)
        return max(2, min(6, base))

    def compose(self) -> dict[str, Any]:
        style_name, look = self._style()
        characters = self._characters()
        words = self._words()
        shot_count = self._shot_count()
        target_ms = None
        if self.controls.duration_s is not None:
            target_ms = int(round(min(self.controls.duration_s, shot_count * MAX_SHOT_DURATION_S) * 1000))
        cap_ms = int(MAX_SHOT_DURATION_S * 1000)

        # Shots that may carry dialogue: after the establishing shot when there is room for one.
        talking_slots = list(range(1, shot_count)) if shot_count >= 3 else list(range(shot_count))
        line_count = self._line_count(characters, shot_count)
        short = False
        lead_ms, gap_ms, tail_ms = 500, 300, 500
        reserve_ms = 200  # the least a shot without dialogue gets when the runtime is tight
        while True:
            lines = self._lines(characters, words, self._slots_for_lines(line_count, talking_slots), short)
            assignment: dict[int, list[_Line]] = {}
            for line in lines:
                line.duration_ms = _estimate_line_ms(line.text)
                assignment.setdefault(line.shot, []).append(line)
            needs = []
            for shot in range(shot_count):
                group = assignment.get(shot, [])
                need = sum(line.duration_ms for line in group)
                if group:
                    need += lead_ms + gap_ms * (len(group) - 1) + tail_ms
                needs.append(need if group else reserve_ms)
            fits = all(n <= cap_ms for n in needs) and (target_ms is None or sum(needs) <= target_ms)
            if fits:
                break
            # Tighten in order of least harm: padding, then fewer lines, then terse lines.
            if lead_ms > 100:
                lead_ms, gap_ms, tail_ms = 100, 50, 100
            elif line_count > 2:
                line_count -= 1
            elif not short:
                short = True
            elif reserve_ms > 50:
                reserve_ms = 50
            else:
                raise ValueError(f"runtime {target_ms} ms is too short for {shot_count} shots with dialogue")

        # Shot lengths: each shot gets what its lines need plus a share of the rest.
        ideal = [self.rng.randint(35, 55) * 100 for _ in range(shot_count)]
        if target_ms is None:
            durations = [min(cap_ms, int(math.ceil(max(ideal[i], needs[i] + 600) / 100.0) * 100))
                         for i in range(shot_count)]
        else:
            durations = _distribute(target_ms, needs, [float(w) for w in ideal], cap_ms)
        runtime_ms = sum(durations)

        # Dialogue placed inside its shot, silences filling the gaps: contiguous from 0 to the runtime.
        timeline: list[dict[str, Any]] = []
        cursor = 0
        shot_start = 0
        for shot in range(shot_count):
            group = assignment.get(shot, [])
            if group:
                slack = durations[shot] - sum(line.duration_ms for line in group)
                weights = [1.0] + [0.6] * (len(group) - 1) + [1.4]
                gaps = [int(slack * w / sum(weights)) for w in weights]
                position = shot_start + gaps[0]
                for k, line in enumerate(group):
                    if position > cursor:
                        timeline.append({"type": "silence", "start_time_sec": cursor / 1000,
                                         "duration_sec": (position - cursor) / 1000})
                    timeline.append({"type": "dialogue", "character_id": line.character.id, "text": line.text,
                                     "start_time_sec": position / 1000, "duration_sec": line.duration_ms / 1000})
                    cursor = position + line.duration_ms
                    position = cursor + (gaps[k + 1] if k + 1 < len(group) else 0)
            shot_start += durations[shot]
        if runtime_ms > cursor:
            timeline.append({"type": "silence", "start_time_sec": cursor / 1000,
                             "duration_sec": (runtime_ms - cursor) / 1000})

        shots, base_images = self._shots_and_keyframes(characters, words, look, durations, assignment)
        plan_id = "plan_" + hashlib.sha256(json.dumps(
            [self.idea, self.seed, self.controls.model_dump()], sort_keys=True).encode()).hexdigest()[:16]
        metadata: dict[str, Any] = {
            "plan_id": plan_id,
            "seed": self.seed,
            "source": PLANNER_SOURCE,
            "planned_offline": True,
            "planner": "sparkle-offline-planner: deterministic offline planner (no LLM); "
                       "same idea, seed and options give the same plan",
            "idea": self.idea[:500],
            "style": style_name,
        }
        if self.revision:
            metadata["revision"] = self.revision
            metadata["addressed_violations"] = [item["path"] for item in self.feedback][:50]
        return {
            "title": self._title(characters, words),
            "characters": [
                {"id": c.id, "name": c.name, "description": c.description, "voice_profile": c.voice}
                for c in characters
            ],
            "base_images": base_images,
            "shots": shots,
            "dialogue_timeline": timeline,
            "render_profile": self.render_profile,
            "metadata": metadata,
        }

    def _shots_and_keyframes(self, characters: list[_Character], words: dict[str, str], look: Mapping[str, Any],
                             durations: list[int], assignment: Mapping[int, list[_Line]],
                             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        shot_count = len(durations)
        weather = words["weather"]
        atmosphere = ", ".join(p for p in (words["time_phrase"], f"with {weather}" if weather else "") if p)
        place = words["place_the"]
        names = [c.name for c in characters]
        group_phrase = " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + f" and {names[-1]}"
        subject_of = {}
        present: list[list[_Character]] = []
        for shot in range(shot_count):
            group = assignment.get(shot, [])
            if group:
                speakers = list(dict.fromkeys(line.character.id for line in group))
                cast = [c for c in characters if c.id in speakers]
            else:
                cast = list(characters)
            present.append(cast)
            subject_of[shot] = " and ".join(c.name for c in cast)

        # Camera moves: establishing shots open wide, talking shots stay close; no move twice in a row.
        moves: list[str] = []
        for shot in range(shot_count):
            talking = bool(assignment.get(shot))
            if shot == 0 and shot_count > 1:
                pool = ["crane down", "pull-out", "pan left", "pan right", "tilt up"]
            elif talking:
                pool = [m for m, (_, close) in CAMERA_MOVES.items() if close]
            else:
                pool = [m for m, (_, close) in CAMERA_MOVES.items() if not close] + ["handheld"]
            pool = [m for m in pool if not moves or m != moves[-1]] or pool
            unused = [m for m in pool if m not in moves]
            moves.append(self.rng.choice(unused or pool))

        verb3 = _third_person(words["vp"]) if len(characters) == 1 else words["vp"]
        shots: list[dict[str, Any]] = []
        for shot in range(shot_count):
            group = assignment.get(shot, [])
            cast = present[shot]
            if shot == 0 and shot_count > 1:
                visual = f"Wide establishing view of {place} {atmosphere}; {group_phrase} small in the frame"
            elif group:
                speaker = group[0].character
                visual = (f"Talking close-up on {speaker.name} ({speaker.look}) speaking, "
                          f"{'calm and searching' if group[0].stage == 'setup' else 'tense, eyes glistening' if group[0].stage == 'tension' else 'softening into relief'}")
            elif shot == shot_count - 1:
                visual = f"Closing medium-wide shot as {group_phrase} {verb3}, the {words['place']} around them"
            else:
                visual = f"Medium shot as {group_phrase} {verb3} in {place}"
            move = moves[shot]
            motion = CAMERA_MOVES[move][0].format(subject=subject_of[shot] or place, place=place)
            setting = f"{place[0].upper() + place[1:]}, {atmosphere}"
            if shot:
                setting += "; " + ("same place, tighter framing" if group else "same place, wider angle")
            shots.append({
                "id": f"shot_{shot + 1:03d}",
                "duration_sec": durations[shot] / 1000,
                "setting": setting,
                "visual_description": visual,
                "start_base_image_id": f"frame_{shot:03d}",
                "end_base_image_id": f"frame_{shot + 1:03d}",
                "motion_prompt": f"{move}: {motion}",
                "is_talking_closeup": bool(group),
            })

        negative = ", ".join(p for p in (NEGATIVE_BASE, look.get("negative", "")) if p)
        base_images: list[dict[str, Any]] = []
        for frame in range(shot_count + 1):
            # Keyframe i ends shot i-1 and starts shot i: compose it for the shot it opens.
            shot = min(frame, shot_count - 1)
            cast = present[shot]
            people = ", ".join(f"{c.name} ({c.look})" for c in cast)
            if frame == 0:
                composition = f"Wide shot of {place}, {people} in the distance"
            elif frame == shot_count:
                composition = f"Final frame: {group_phrase} together at {place}, calm resolution"
            elif assignment.get(shot):
                composition = f"Close-up portrait of {people}, facing camera, at {place}"
            else:
                composition = f"Medium shot of {people} at {place}"
            prompt = f"{composition}, {atmosphere}, {look['palette']}{self._frame_phrase()}"
            base_images.append({
                "id": f"frame_{frame:03d}",
                "prompt": prompt[:2000],
                "negative_prompt": negative,
                "seed": (self.seed + 1009 * (frame + 1)) % (MAX_SEED + 1),
            })
        return shots, base_images


def frame_phrase(video: Mapping[str, Any]) -> str:
    """How a keyframe prompt names a frame that is not landscape (empty for 16:9 or an unset size).

    Image models compose for the words: a tall frame wants the figures stacked and
    centred with headroom, not spread across a width it does not have.
    """
    width, height = video.get("width"), video.get("height")
    if not width or not height or width > height:
        return ""
    if width == height:
        return ", square 1:1 frame, subject centred"
    return ", vertical 9:16 frame, figures centred and stacked in depth, headroom above"


def plan_from_request(request: LlmRequest) -> dict[str, Any]:
    """Read an ADK request the way the script agent delivers it and compose the plan.

    The request being answered is the latest user turn that is not validation
    feedback; feedback turns after it are the errors sent back on a retry.
    """
    system = _text_of(request.config.system_instruction) if request.config else ""
    user_turns = [_text_of(content) for content in request.contents if content.role == "user"]
    request_text, feedback, revision = None, [], 0
    for text in reversed(user_turns):
        if FEEDBACK_MARKER in text:
            revision += 1
            if not feedback:
                feedback = parse_validation_feedback(text)
            continue
        if text.strip():
            request_text = text
            break
    if not request_text:
        raise ValueError("the request carries no idea: send the film idea as the user message")
    idea, controls = parse_plan_request(request_text)
    if not idea:
        raise ValueError("the user message has controls but no idea: describe the film in words")
    render_profile = parse_render_profile(system) if system else None
    return OfflinePlanner(idea, controls, render_profile=render_profile, feedback=feedback,
                          revision=revision).compose()


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, types.Content):
        return "\n".join(part.text for part in content.parts or [] if part.text and not part.thought)
    if isinstance(content, types.Part):
        return content.text or ""
    if isinstance(content, (list, tuple)):
        return "\n".join(_text_of(item) for item in content)
    return str(content)


class OfflinePlannerLlm(BaseLlm):
    """ADK model ``sparkle-offline-planner``: answers a plan request with MoviePlan JSON text."""

    model: str = PLANNER_MODEL

    @classmethod
    def supported_models(cls) -> list[str]:
        return [re.escape(PLANNER_MODEL)]

    @property
    def capabilities(self) -> LlmCapabilities:
        return LlmCapabilities(output_schema_and_tools=False)

    async def generate_content_async(self, llm_request: LlmRequest, stream: bool = False,
                                     ) -> AsyncGenerator[LlmResponse, None]:
        try:
            plan = plan_from_request(llm_request)
        except ValueError as exc:
            yield LlmResponse(error_code="INVALID_REQUEST", error_message=str(exc), turn_complete=True)
            return
        text = json.dumps(plan, ensure_ascii=False, indent=2)
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]),
                          turn_complete=True, model_version=PLANNER_MODEL)


LLMRegistry.register(OfflinePlannerLlm)

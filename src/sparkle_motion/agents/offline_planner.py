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

The module also owns the prompt protocol that ``script_agent`` speaks (the
``IDEA:`` / ``CONTROLS (JSON):`` request, the ``VALIDATION ERRORS`` feedback and
the ``RENDER_PROFILE (JSON):`` line of the system instruction), so both sides
read and write one format.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.adk.models import LlmCapabilities
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.models.registry import LLMRegistry
from google.genai import types
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sparkle_motion.plan.models import AUTO_MODEL, MAX_SEED
from sparkle_motion.plan.rules import MAX_SHOT_DURATION_S

PLANNER_MODEL = "sparkle-offline-planner"
PLANNER_SOURCE = PLANNER_MODEL

# Request bounds (the HTTP API and generate_plan enforce them; the planner clamps
# hand-typed values from `adk web` into them rather than refusing).
MIN_SHOTS, MAX_SHOTS = 1, 12
MIN_DURATION_S, MAX_DURATION_S = 4.0, 300.0
MAX_IDEA_CHARS = 4000
MAX_CHARACTERS = 4  # more voices than this do not fit a 3–5 shot short

# Speech pacing used to size dialogue slots: conversational English runs at about
# 150 words/min (2.5–2.7 words/s); the margin covers the TTS voice's attack/release.
WORDS_PER_SECOND = 2.6
LINE_MARGIN_MS = 350

# Prompt protocol markers (script_agent writes them, the planner reads them).
IDEA_MARKER = "IDEA:"
CONTROLS_MARKER = "CONTROLS (JSON):"
FEEDBACK_MARKER = "VALIDATION ERRORS"
RENDER_PROFILE_MARKER = "RENDER_PROFILE (JSON):"
CONTROL_KEYS = ("title", "shots", "duration_s", "seed", "style")


class PlanControls(BaseModel):
    """The knobs a caller may set besides the idea; None means "planner decides"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = Field(None, min_length=1, max_length=200)
    shots: int | None = Field(None, ge=MIN_SHOTS, le=MAX_SHOTS)
    duration_s: float | None = Field(None, ge=MIN_DURATION_S, le=MAX_DURATION_S, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    style: str | None = Field(None, min_length=1, max_length=80)

    @field_validator("title", "style", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("duration_s")
    @classmethod
    def _fits_shots(cls, value: float | None, info: ValidationInfo) -> float | None:
        return check_duration_fits_shots(value, info.data.get("shots"))


def check_duration_fits_shots(duration_s: float | None, shots: int | None) -> float | None:
    """A runtime longer than ``shots`` × 60 s cannot be cut into that many shots."""
    if duration_s is not None and shots is not None and duration_s > shots * MAX_SHOT_DURATION_S:
        needed = math.ceil(duration_s / MAX_SHOT_DURATION_S)
        raise ValueError(
            f"{duration_s:g} s does not fit in {shots} shot(s) of at most {MAX_SHOT_DURATION_S:g} s each; "
            f"ask for at least {needed} shots or a shorter film"
        )
    return duration_s


# --------------------------------------------------------------------------- protocol


def format_plan_request(idea: str, controls: PlanControls) -> str:
    """The user message script_agent sends: the idea, then the controls as one JSON line."""
    payload = {key: getattr(controls, key) for key in CONTROL_KEYS}
    return (
        "Write a MoviePlan for this idea.\n\n"
        f"{IDEA_MARKER}\n{idea.strip()}\n\n"
        f"{CONTROLS_MARKER}\n{json.dumps(payload, ensure_ascii=False)}\n"
    )


def format_validation_feedback(violations: Sequence[Mapping[str, Any]], *, attempt: int, max_attempts: int,
                               previous_output: str | None = None) -> str:
    """The retry message: every violation as ``- path: message``, then what to return."""
    lines = [f"{FEEDBACK_MARKER} (attempt {attempt} of {max_attempts}): the MoviePlan you returned breaks these rules:"]
    for violation in violations:
        lines.append(f"- {violation.get('path', '$')}: {violation.get('message', '')}")
    if previous_output is not None:
        lines += ["", "Your previous answer was:", previous_output[:20000]]
    lines += ["", "Return the complete corrected MoviePlan as JSON only, keeping everything that was valid."]
    return "\n".join(lines)


def format_render_profile(render_profile: Mapping[str, Any]) -> str:
    return f"{RENDER_PROFILE_MARKER} {json.dumps(dict(render_profile), sort_keys=True)}"


_FEEDBACK_LINE_RE = re.compile(r"^- (?P<path>[^:\n]+): (?P<message>.*)$", re.MULTILINE)


def parse_validation_feedback(text: str) -> list[dict[str, str]]:
    """The violations listed in a feedback message (empty when ``text`` is not one)."""
    if FEEDBACK_MARKER not in text:
        return []
    body = text.split("Your previous answer was:", 1)[0]
    return [{"path": m["path"].strip(), "message": m["message"].strip()} for m in _FEEDBACK_LINE_RE.finditer(body)]


def _find_json_object(text: str, start: int = 0) -> tuple[dict[str, Any], int, int] | None:
    decoder = json.JSONDecoder()
    index = text.find("{", start)
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            return value, index, end
        index = text.find("{", end)
    return None


def _coerce_controls(raw: Mapping[str, Any]) -> PlanControls:
    """Controls from a hand-written block: unknown keys and unusable values are dropped, numbers clamped."""
    clean: dict[str, Any] = {}
    for key in CONTROL_KEYS:
        value = raw.get(key)
        if value is None or isinstance(value, bool):
            continue
        if key in ("shots", "seed"):
            try:
                number = int(float(value))
            except (TypeError, ValueError):
                continue
            clean[key] = min(max(number, MIN_SHOTS), MAX_SHOTS) if key == "shots" else min(max(number, 0), MAX_SEED)
        elif key == "duration_s":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(seconds):
                clean[key] = min(max(seconds, MIN_DURATION_S), MAX_DURATION_S)
        elif isinstance(value, str) and value.strip():
            clean[key] = value.strip()[:200 if key == "title" else 80]
    if "duration_s" in clean and "shots" in clean:
        clean["duration_s"] = min(clean["duration_s"], clean["shots"] * MAX_SHOT_DURATION_S)
    return PlanControls.model_validate(clean)


def parse_plan_request(text: str) -> tuple[str, PlanControls]:
    """Idea and controls from a user message.

    Reads the protocol format (``IDEA:`` … ``CONTROLS (JSON):`` {…}) and also a
    message typed by hand in ``adk web``: the idea in plain words, optionally
    with a JSON object such as ``{"shots": 4, "style": "noir"}`` anywhere in it.
    """
    idea_text = text
    controls_raw: dict[str, Any] = {}
    marker = text.rfind(CONTROLS_MARKER)
    if marker != -1:
        found = _find_json_object(text, marker + len(CONTROLS_MARKER))
        if found:
            controls_raw = found[0]
        idea_text = text[:marker]
    else:
        # The last JSON object made only of control keys is the controls block.
        search_from, chosen = 0, None
        while (found := _find_json_object(text, search_from)) is not None:
            obj, begin, end = found
            if obj and set(obj) <= set(CONTROL_KEYS):
                chosen = (obj, begin, end)
            search_from = end
        if chosen:
            controls_raw = chosen[0]
            begin, end = chosen[1], chosen[2]
            # Drop a surrounding ```json fence together with the object.
            prefix = re.search(r"```(?:json)?\s*$", text[:begin])
            suffix = re.match(r"\s*```", text[end:])
            begin = prefix.start() if prefix else begin
            end = end + suffix.end() if suffix else end
            idea_text = text[:begin] + " " + text[end:]
    idea_marker = idea_text.find(IDEA_MARKER)
    if idea_marker != -1:
        idea_text = idea_text[idea_marker + len(IDEA_MARKER):]
    idea = " ".join(idea_text.split())[:MAX_IDEA_CHARS]
    return idea, _coerce_controls(controls_raw)


def parse_render_profile(system_instruction: str) -> dict[str, Any] | None:
    index = system_instruction.rfind(RENDER_PROFILE_MARKER)
    if index == -1:
        return None
    found = _find_json_object(system_instruction, index + len(RENDER_PROFILE_MARKER))
    return found[0] if found else None


# --------------------------------------------------------------------------- lexicons

# Function words and frequent sentence starters: a capitalised token in this set
# is an ordinary word, never a character's name.
COMMON_WORDS = frozenset("""
a an the and or but nor so yet for of in on at to from by with without into onto over under above below
across through between among around behind beside near after before during until since while when where
why how what who whom whose which that this these those there here then than as if though although
because unless once whenever wherever i me my mine we us our ours you your yours he him his she her hers
it its they them their theirs one two three four five six seven eight nine ten some any every each all
both few many much more most other another such no not only just even still also very too again ever
never always sometimes often soon now today tonight tomorrow yesterday is are was were be been being
has have had do does did will would shall should can could may might must let lets let's meanwhile
suddenly finally later somewhere someone something everyone everything nobody nothing inside outside
old young new last first next little big small long short great good bad lonely lost tired late early
late dark bright quiet loud cold hot warm broken hidden secret strange ancient final young once upon
after amid beyond despite toward towards within along aboard beneath underneath about against past via
off up down out upon versus per like unlike
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december christmas halloween
god mom dad ok okay yes hello hey oh
""".split())

# Honorifics and titles: "Detective Rhodes" is Rhodes, a detective.
TITLES = {
    "detective": "detective", "captain": "captain", "doctor": "doctor", "dr": "doctor", "professor": "professor",
    "officer": "police officer", "agent": "agent", "sergeant": "sergeant", "inspector": "inspector",
    "mr": "man", "mrs": "woman", "ms": "woman", "miss": "woman", "sir": "knight", "lady": "lady", "lord": "lord",
    "king": "king", "queen": "queen", "prince": "prince", "princess": "princess", "uncle": "uncle",
    "aunt": "aunt", "grandma": "grandmother", "grandpa": "grandfather", "coach": "coach", "chef": "chef",
    "father": "priest", "sister": "nun", "general": "general", "commander": "commander", "major": "major",
}

# role -> (plural, gender: f/m/n)
ROLES: dict[str, tuple[str, str]] = {
    "friend": ("friends", "n"), "detective": ("detectives", "n"), "robot": ("robots", "n"),
    "android": ("androids", "n"), "fisherman": ("fishermen", "m"), "fisherwoman": ("fisherwomen", "f"),
    "daughter": ("daughters", "f"), "son": ("sons", "m"), "granddaughter": ("granddaughters", "f"),
    "grandson": ("grandsons", "m"), "mother": ("mothers", "f"), "father": ("fathers", "m"),
    "sister": ("sisters", "f"), "brother": ("brothers", "m"), "girl": ("girls", "f"), "boy": ("boys", "m"),
    "woman": ("women", "f"), "man": ("men", "m"), "captain": ("captains", "n"), "pilot": ("pilots", "n"),
    "astronaut": ("astronauts", "n"), "chef": ("chefs", "n"), "baker": ("bakers", "n"),
    "teacher": ("teachers", "n"), "student": ("students", "n"), "doctor": ("doctors", "n"),
    "nurse": ("nurses", "n"), "soldier": ("soldiers", "n"), "knight": ("knights", "n"), "witch": ("witches", "f"),
    "wizard": ("wizards", "m"), "thief": ("thieves", "n"), "musician": ("musicians", "n"),
    "dj": ("djs", "n"), "painter": ("painters", "n"), "artist": ("artists", "n"),
    "photographer": ("photographers", "n"), "farmer": ("farmers", "n"), "king": ("kings", "m"),
    "queen": ("queens", "f"), "prince": ("princes", "m"), "princess": ("princesses", "f"),
    "stranger": ("strangers", "n"), "scientist": ("scientists", "n"), "engineer": ("engineers", "n"),
    "grandmother": ("grandmothers", "f"), "grandfather": ("grandfathers", "m"), "child": ("children", "n"),
    "kid": ("kids", "n"), "waiter": ("waiters", "m"), "waitress": ("waitresses", "f"), "barista": ("baristas", "n"),
    "mechanic": ("mechanics", "n"), "explorer": ("explorers", "n"), "sailor": ("sailors", "n"),
    "pirate": ("pirates", "n"), "ghost": ("ghosts", "n"), "alien": ("aliens", "n"), "cop": ("cops", "n"),
    "reporter": ("reporters", "n"), "journalist": ("journalists", "n"), "writer": ("writers", "n"),
    "poet": ("poets", "n"), "singer": ("singers", "n"), "dancer": ("dancers", "n"), "boxer": ("boxers", "n"),
    "runner": ("runners", "n"), "neighbor": ("neighbors", "n"), "neighbour": ("neighbours", "n"),
    "partner": ("partners", "n"), "roommate": ("roommates", "n"), "keeper": ("keepers", "n"),
    "lighthouse keeper": ("lighthouse keepers", "n"), "hacker": ("hackers", "n"), "spy": ("spies", "n"),
    "courier": ("couriers", "n"), "driver": ("drivers", "n"), "traveler": ("travelers", "n"),
    "traveller": ("travellers", "n"), "wanderer": ("wanderers", "n"), "inventor": ("inventors", "n"),
    "librarian": ("librarians", "n"), "gardener": ("gardeners", "n"), "clown": ("clowns", "n"),
    "magician": ("magicians", "n"), "samurai": ("samurai", "n"), "ninja": ("ninjas", "n"),
    "cowboy": ("cowboys", "m"), "sheriff": ("sheriffs", "n"), "nun": ("nuns", "f"), "priest": ("priests", "m"),
    "husband": ("husbands", "m"), "wife": ("wives", "f"), "lover": ("lovers", "n"), "twin": ("twins", "n"),
    "sibling": ("siblings", "n"), "cat": ("cats", "n"), "dog": ("dogs", "n"), "fox": ("foxes", "n"),
    "dragon": ("dragons", "n"), "owner": ("owners", "n"), "student pilot": ("student pilots", "n"),
    "bartender": ("bartenders", "n"), "drummer": ("drummers", "n"), "guitarist": ("guitarists", "n"),
    "climber": ("climbers", "n"), "surfer": ("surfers", "n"), "skater": ("skaters", "n"),
}
_ROLE_BY_PLURAL = {plural: role for role, (plural, _) in ROLES.items()}
# Collective nouns that stand for several people at once.
GROUPS = {"couple": ("partner", 2), "twins": ("twin", 2), "siblings": ("sibling", 2), "lovers": ("lover", 2)}
# Family words used as names ("Grandma teaches Leo"): the word is the character's name.
KINSHIP_NAMES = {"grandma": ("grandmother", "f"), "granny": ("grandmother", "f"), "nana": ("grandmother", "f"),
                 "grandpa": ("grandfather", "m"), "mom": ("mother", "f"), "mum": ("mother", "f"),
                 "mama": ("mother", "f"), "dad": ("father", "m"), "papa": ("father", "m")}
# Where a role's story naturally happens, for ideas that name no place.
ROLE_SETTINGS = {
    "astronaut": "space station", "alien": "desert canyon", "chef": "restaurant kitchen", "baker": "bakery",
    "detective": "rain-slicked city street", "cop": "city street", "sailor": "harbor", "pirate": "ship deck",
    "fisherman": "harbor", "lighthouse keeper": "lighthouse", "keeper": "lighthouse", "farmer": "farm",
    "teacher": "classroom", "student": "classroom", "doctor": "hospital corridor", "nurse": "hospital corridor",
    "scientist": "laboratory", "engineer": "workshop", "inventor": "workshop", "robot": "workshop",
    "knight": "castle", "king": "palace", "queen": "palace", "prince": "palace", "princess": "palace",
    "wizard": "tower", "witch": "forest", "cowboy": "desert", "sheriff": "desert town", "librarian": "library",
    "gardener": "garden", "musician": "club", "dj": "club", "singer": "stage", "dancer": "stage",
    "painter": "studio", "artist": "studio", "photographer": "city street", "explorer": "jungle",
    "climber": "mountain", "surfer": "beach", "pilot": "airfield", "soldier": "field", "spy": "train",
    "hacker": "apartment", "barista": "cafe", "bartender": "bar", "waiter": "diner", "waitress": "diner",
    "grandmother": "kitchen", "grandfather": "porch", "mechanic": "garage", "boxer": "gym", "runner": "track",
}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "pair": 2, "both": 2}
SINGULAR_DETERMINERS = frozenset("a an the his her their my our its this that lone single young old".split())

SETTINGS = (
    "rooftop", "roof", "city", "street", "alley", "forest", "woods", "beach", "desert", "ship", "spaceship",
    "space station", "station", "diner", "cafe", "café", "bar", "kitchen", "library", "lab", "laboratory",
    "office", "train", "subway", "harbor", "harbour", "port", "mountain", "village", "castle", "park", "bridge",
    "warehouse", "apartment", "garden", "lighthouse", "market", "school", "hospital", "church", "field",
    "river", "lake", "island", "cave", "tower", "museum", "theater", "theatre", "stage", "club", "gym",
    "highway", "road", "motel", "hotel", "farm", "barn", "ocean", "sea", "boat", "jungle", "swamp", "canyon",
    "temple", "palace", "arcade", "laundromat", "garage", "workshop", "studio", "shop", "bakery", "mall",
    "airport", "cemetery", "graveyard", "pier", "dock", "meadow", "valley", "glacier", "moon", "mars",
    "planet", "spacecraft", "classroom", "courtroom", "prison", "tavern", "inn", "square", "plaza",
    "parking lot", "gas station", "bus stop", "greenhouse", "attic", "basement", "balcony", "porch",
)
TIMES_OF_DAY = {
    "before sunrise": "in the blue hour before sunrise", "sunrise": "at sunrise", "dawn": "at dawn",
    "daybreak": "at daybreak", "morning": "in the early morning", "noon": "at high noon",
    "midday": "at midday", "afternoon": "in the late afternoon", "golden hour": "at golden hour",
    "sunset": "at sunset", "dusk": "at dusk", "twilight": "at twilight", "evening": "in the evening",
    "night": "at night", "tonight": "at night", "nighttime": "at night", "midnight": "at midnight",
    "moonlit": "under moonlight",
}
WEATHER = {
    "rain": "rain", "rainy": "rain", "raining": "rain", "drizzle": "drizzle", "storm": "a storm",
    "stormy": "a storm", "thunder": "a thunderstorm", "thunderstorm": "a thunderstorm", "lightning": "lightning",
    "snow": "falling snow", "snowy": "falling snow", "snowing": "falling snow", "blizzard": "a blizzard",
    "fog": "fog", "foggy": "fog", "mist": "mist", "misty": "mist", "wind": "wind", "windy": "wind",
    "heatwave": "a heatwave", "sunny": "bright sun", "hail": "hail",
}
STYLE_LOOKS: dict[str, dict[str, Any]] = {
    "noir": {"palette": "high-contrast black and white, deep shadows, venetian-blind light, cigarette haze, film grain",
             "negative": "saturated colour, pastel tones", "time": "at night", "weather": "rain"},
    "cyberpunk": {"palette": "neon magenta and cyan, wet reflective streets, holographic signs, volumetric haze",
                  "negative": "daylight pastoral", "time": "at night"},
    "anime": {"palette": "cel-shaded anime style, clean line art, vivid flat colours, soft bloom",
              "negative": "photorealistic skin texture"},
    "watercolor": {"palette": "soft watercolor washes, paper texture, bleeding pastel edges",
                   "negative": "hard digital edges"},
    "western": {"palette": "dusty ochre and sepia, wide-open skies, harsh sun, 35mm grain",
                "negative": "neon, modern cars", "time": "at high noon"},
    "horror": {"palette": "desaturated greens, crushed blacks, single practical light source, unsettling negative space",
               "negative": "cheerful bright colours", "time": "at midnight", "weather": "fog"},
    "documentary": {"palette": "natural light, muted realistic colour, observational framing, 16mm texture",
                    "negative": "stylised lighting"},
    "fantasy": {"palette": "luminous golden light, rich jewel tones, painterly atmosphere",
                "negative": "modern technology"},
    "sci-fi": {"palette": "cool steel blues, clean practical panel lights, anamorphic flares",
               "negative": "medieval props"},
    "retro": {"palette": "1980s VHS colour bleed, warm halation, chunky grain", "negative": "4k clarity"},
    "pixar": {"palette": "stylised 3D animation, soft global illumination, saturated friendly colours",
              "negative": "photorealism, gore"},
    "vintage": {"palette": "faded Kodachrome colours, soft vignette, light leaks", "negative": "digital sharpness"},
    "cinematic": {"palette": "cinematic lighting, shallow depth of field, rich natural colour grade, 35mm film look",
                  "negative": ""},
}
STYLE_SYNONYMS = {"film noir": "noir", "neo-noir": "noir", "scifi": "sci-fi", "science fiction": "sci-fi",
                  "animated": "pixar", "cartoon": "pixar", "watercolour": "watercolor", "80s": "retro",
                  "1980s": "retro", "spooky": "horror", "ghost story": "horror"}
# verb (base form) -> takes an object?
VERBS: dict[str, bool] = {
    "reconcile": False, "chase": True, "search": False, "find": True, "escape": False, "fight": True,
    "meet": False, "steal": True, "build": True, "fix": True, "repair": True, "paint": True, "race": False,
    "dance": False, "sing": False, "confess": False, "argue": False, "hunt": True, "rescue": True,
    "save": True, "investigate": True, "solve": True, "discover": True, "explore": True, "cook": True,
    "bake": True, "wait": False, "return": False, "leave": False, "lose": True, "win": True, "plan": True,
    "hide": True, "follow": True, "track": True, "deliver": True, "climb": True, "sail": False, "fly": False,
    "learn": False, "try": False, "want": False, "decide": False, "teach": True, "forgive": True, "remember": True, "forget": True, "open": True,
    "protect": True, "guard": True, "play": True, "write": True, "read": True, "bury": True, "dig": False,
    "catch": True, "free": True, "break": True, "cross": True, "defend": True, "finish": True, "sell": True,
    "trade": True, "share": True, "celebrate": False, "mourn": False, "say goodbye": False, "run": False,
    "perform": False, "interrogate": True, "question": True, "visit": True, "sneak": False, "prepare": True, "reunite": False, "travel": False, "heal": False, "confront": True,
}
GENDERED_NAMES = {
    "f": ("Ava", "Mira", "Lena", "Nora", "Iris", "Sofia", "Maya", "Rosa", "Elena", "Hana", "June", "Clara",
          "Zara", "Ines", "Tess", "Priya", "Noor", "Greta", "Yuki", "Amara"),
    "m": ("Miko", "Theo", "Jonah", "Felix", "Omar", "Luca", "Kenji", "Rafael", "Silas", "Arun", "Hugo",
          "Mateo", "Idris", "Caleb", "Emil", "Tomas", "Ravi", "Declan", "Bruno", "Kofi"),
    "n": ("Sam", "Alex", "Robin", "Jules", "Quinn", "Rowan", "Sky", "Kit", "Ash", "Remy", "Noa", "Eden"),
}
_KNOWN_GENDER = {name.lower(): g for g, names in GENDERED_NAMES.items() for name in names if g != "n"}
WARDROBE = ("red raincoat", "grey wool coat", "yellow scarf", "denim jacket", "black turtleneck",
            "green parka", "white linen shirt", "leather jacket", "striped sweater", "navy peacoat",
            "orange windbreaker", "burgundy cardigan")
VOICES = {
    "f": ("en-us+f3", "en-us+f2", "en-us+f4", "en-us+f1", "en-us+f5"),
    "m": ("en-us+m3", "en-us+m1", "en-us+m7", "en-us+m2", "en-us+m4"),
}
VOICE_STYLES = ("warm", "measured", "bright", "gravelly", "wry", "soft", "urgent", "calm")
# name -> (camera phrase template, good for talking close-ups?)
CAMERA_MOVES: dict[str, tuple[str, bool]] = {
    "push-in": ("slow push-in toward {subject}", True),
    "pull-out": ("slow pull-out revealing {place}", False),
    "pan left": ("gentle pan left across {place} to {subject}", False),
    "pan right": ("gentle pan right following {subject}", False),
    "tilt up": ("tilt up from the ground to {subject}", False),
    "crane down": ("crane down from above {place} to {subject}", False),
    "static": ("locked-off static frame holding on {subject}", True),
    "handheld": ("subtle handheld drift close on {subject}", True),
}
NEGATIVE_BASE = "blurry, low quality, distorted faces, extra fingers, deformed hands, text, watermark, logo"

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’\-]*|\d+")
_SENTENCE_END = frozenset(".!?:;\"“”")
_LOCATION_PREPS = frozenset("in on at to from into across over near through above around toward towards outside "
                            "inside within beyond".split())


# --------------------------------------------------------------------------- idea analysis


@dataclass
class _Token:
    text: str
    start: int
    sentence_initial: bool
    after_comma: bool = False

    @property
    def lower(self) -> str:
        return self.text.lower()

    @property
    def capitalised(self) -> bool:
        return self.text[0].isupper() and not self.text.isupper() or (len(self.text) == 1 and self.text.isupper())


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    last_end = 0
    for match in _WORD_RE.finditer(text):
        between = text[last_end:match.start()]
        initial = not tokens or any(ch in _SENTENCE_END for ch in between)
        word = re.sub(r"(?:'s|’s|'|’)$", "", match.group())
        tokens.append(_Token(word, match.start(), initial, "," in between))
        last_end = match.end()
    return tokens


@dataclass
class _Person:
    name: str | None
    role: str | None
    gender: str = "n"
    adjective: str | None = None


@dataclass
class IdeaAnalysis:
    """What the planner read in the idea."""

    people: list[_Person] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    setting: str | None = None
    time_of_day: str | None = None
    weather: str | None = None
    style: str | None = None
    verb: str | None = None
    obj: str | None = None
    words: list[str] = field(default_factory=list)


def _lemma_verb(word: str) -> str | None:
    word = word.lower()
    candidates = [word]
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    if word.endswith("ing"):
        candidates += [word[:-3], word[:-3] + "e", word[:-4]]
    if word.endswith("ed"):
        candidates += [word[:-2], word[:-1], word[:-3]]
    for candidate in candidates:
        if candidate in VERBS:
            return candidate
    return None


def _is_content_word(lower: str) -> bool:
    return (lower not in COMMON_WORDS and lower not in ROLES and lower not in _ROLE_BY_PLURAL
            and lower not in NUMBER_WORDS and lower not in TIMES_OF_DAY and lower not in WEATHER
            and not lower.isdigit())


def _looks_like_name(token: _Token, tokens: list[_Token], index: int) -> bool:
    if not token.capitalised or len(token.text) < 2 and token.text not in ("I",):
        return False
    lower = token.lower
    if lower in COMMON_WORDS or lower in ROLES or lower in _ROLE_BY_PLURAL or lower in TITLES:
        return False
    if lower in TIMES_OF_DAY or lower in WEATHER or lower in SETTINGS or lower in STYLE_LOOKS:
        return False
    if index and tokens[index - 1].lower in ("a", "an", "the") and not token.sentence_initial:
        return False  # "the End", "a Stranger": a capitalised noun, not somebody's name
    if token.sentence_initial:
        # A sentence may open with an ordinary word ("Rain", "Lonely", "Running"):
        # accept it only when it reads as a name elsewhere too, or joins another name.
        if re.search(r"(?:ing|ly|ed)$", lower):
            return False
        nxt = tokens[index + 1] if index + 1 < len(tokens) else None
        after = tokens[index + 2] if index + 2 < len(tokens) else None
        repeated = any(t.text == token.text and not t.sentence_initial for t in tokens)
        joins = nxt is not None and nxt.lower == "and" and after is not None and after.capitalised
        comma_apposition = nxt is not None and nxt.after_comma
        if not (repeated or joins or comma_apposition or (nxt is not None and _lemma_verb(nxt.text))):
            return False
    return True


def _style_in(text: str) -> str | None:
    lower = text.lower()
    for phrase, style in STYLE_SYNONYMS.items():
        if re.search(rf"\b{re.escape(phrase)}\b", lower):
            return style
    for style in STYLE_LOOKS:
        if style != "cinematic" and re.search(rf"\b{re.escape(style)}\b", lower):
            return style
    return None


def analyze_idea(idea: str) -> IdeaAnalysis:
    """Pull characters, place, time, weather, style, a verb and an object out of the idea."""
    tokens = _tokenize(idea)
    lower_text = " ".join(t.lower for t in tokens)
    result = IdeaAnalysis(words=[t.lower for t in tokens])

    # Names (with titles and appositions), skipping places named after a location preposition.
    named: dict[str, _Person] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        prev = tokens[index - 1] if index else None
        if token.lower in KINSHIP_NAMES:
            name = token.text[0].upper() + token.text[1:].lower()
            role, gender = KINSHIP_NAMES[token.lower]
            named.setdefault(name, _Person(name, role, gender))
            index += 1
            continue
        title_role = TITLES.get(token.lower) if token.capitalised else None
        if title_role and index + 1 < len(tokens) and _looks_like_name(tokens[index + 1], tokens, index + 1) \
                and not tokens[index + 1].sentence_initial:
            name_token = tokens[index + 1]
            gender = ROLES.get(title_role, ("", "n"))[1]
            if token.lower in ("mr",):
                gender = "m"
            elif token.lower in ("mrs", "ms", "miss"):
                gender = "f"
            named.setdefault(name_token.text, _Person(name_token.text, title_role, gender))
            index += 2
            continue
        if _looks_like_name(token, tokens, index):
            parts = [token.text]
            while index + 1 < len(tokens) and not tokens[index + 1].sentence_initial \
                    and not tokens[index + 1].after_comma and _looks_like_name(tokens[index + 1], tokens, index + 1) \
                    and len(parts) < 3:
                index += 1
                parts.append(tokens[index].text)
            full = " ".join(parts)
            if prev is not None and prev.lower in _LOCATION_PREPS:
                if full not in result.places:
                    result.places.append(full)
            elif full not in named and not any(full in other.split() for other in named):
                named[full] = _Person(full, None, _KNOWN_GENDER.get(parts[0].lower(), "n"))
        index += 1

    # Roles: "two friends", "a retired detective", "the couple"; an apposition
    # ("Ava, a street photographer") gives the role to the name instead.
    role_people: list[_Person] = []
    lowers = [t.lower for t in tokens]
    consumed: set[int] = set()
    for i, word in enumerate(lowers):
        if i in consumed:
            continue
        two = f"{word} {lowers[i + 1]}" if i + 1 < len(lowers) else ""
        role, plural, span = None, False, 1
        if two in ROLES:
            role, span = two, 2
        elif two in _ROLE_BY_PLURAL:
            role, plural, span = _ROLE_BY_PLURAL[two], True, 2
        elif word in GROUPS:
            role, plural = GROUPS[word][0], True
        elif word in ROLES and not (tokens[i].capitalised and word in TITLES and i + 1 < len(tokens)
                                     and tokens[i + 1].capitalised):
            role = word
        elif word in _ROLE_BY_PLURAL:
            role, plural = _ROLE_BY_PLURAL[word], True
        if role is None:
            continue
        consumed.update(range(i, i + span))
        gender = ROLES[role][1]
        # Apposition: "<Name>, a <adj> role" or "her daughter <Name>".
        owner = None
        j = i - 1
        while j >= 0 and lowers[j] not in ("a", "an", "the") and i - j <= 3:
            j -= 1
        if not plural and j >= 1 and tokens[j].after_comma and tokens[j - 1].text in named:
            owner = named[tokens[j - 1].text]
        if not plural and owner is None and i + span < len(tokens) and tokens[i + span].text in named \
                and not tokens[i + span].sentence_initial:
            owner = named[tokens[i + span].text]
        adjective = None
        if i >= 1 and _is_content_word(lowers[i - 1]) and lowers[i - 1] not in SETTINGS \
                and not tokens[i - 1].capitalised:
            adjective = lowers[i - 1]
        if owner is not None:
            owner.role = owner.role or role
            owner.adjective = owner.adjective or adjective
            if owner.gender == "n":
                owner.gender = gender
            continue
        count = 1
        if word in GROUPS:
            count = GROUPS[word][1]
        elif plural:
            count = 2
            for back in (1, 2):
                if i - back >= 0 and lowers[i - back] in NUMBER_WORDS:
                    count = NUMBER_WORDS[lowers[i - back]]
                elif i - back >= 0 and lowers[i - back].isdigit():
                    count = int(lowers[i - back])
        for _ in range(max(1, min(count, MAX_CHARACTERS))):
            role_people.append(_Person(None, role, gender, adjective))

    result.people = (list(named.values()) + role_people)[:MAX_CHARACTERS]

    # Setting: a known place noun with up to two modifiers before it, else the
    # phrase after a location preposition.
    for i, word in enumerate(lowers):
        two = f"{word} {lowers[i + 1]}" if i + 1 < len(lowers) else ""
        noun, span = (two, 2) if two in SETTINGS else ((word, 1) if word in SETTINGS else (None, 0))
        if noun is None:
            continue
        mods: list[str] = []
        k = i - 1
        while k >= 0 and len(mods) < 2 and _is_content_word(lowers[k]) and lowers[k] not in SETTINGS \
                and not tokens[k].capitalised and not _lemma_verb(lowers[k]):
            mods.insert(0, lowers[k])
            k -= 1
        result.setting = " ".join(mods + [noun])
        break
    if result.setting is None:
        match = re.search(r"\b(?:on|in|at|inside|aboard|under|beneath|near)\s+(?:a|an|the)\s+"
                          r"((?:[a-z'-]+\s+){0,2}?[a-z'-]+)\b", lower_text)
        if match and all(_is_content_word(w) for w in match.group(1).split()):
            result.setting = match.group(1)
    if result.setting is None and result.places:
        result.setting = f"streets of {result.places[0]}"
    if result.setting is None:
        # No place named: the place the people's roles belong to ("two astronauts" → space station).
        result.setting = next((ROLE_SETTINGS[p.role] for p in result.people if p.role in ROLE_SETTINGS), None)

    for phrase in sorted(TIMES_OF_DAY, key=len, reverse=True):
        if re.search(rf"\b{re.escape(phrase)}\b", lower_text):
            result.time_of_day = TIMES_OF_DAY[phrase]
            break
    for word in lowers:
        if word in WEATHER:
            result.weather = WEATHER[word]
            break
    result.style = _style_in(idea)

    for i, word in enumerate(lowers):
        verb = _lemma_verb(word)
        if verb:
            # "learns to paint", "tries to escape": the action is the second verb.
            if i + 2 < len(lowers) and lowers[i + 1] == "to" and _lemma_verb(lowers[i + 2]):
                verb = _lemma_verb(lowers[i + 2])
            result.verb = verb
            break
    # Object: a content noun after a determiner that is not a person, place or time.
    setting_words = set((result.setting or "").split())
    for i, word in enumerate(lowers[:-1]):
        if word not in ("a", "an", "the", "his", "her", "their", "its", "my", "our"):
            continue
        j = i + 1
        phrase: list[str] = []
        while j < len(lowers) and len(phrase) < 2 and _is_content_word(lowers[j]) and lowers[j] not in SETTINGS \
                and not tokens[j].capitalised:
            phrase.append(lowers[j])
            j += 1
        if phrase and not set(phrase) & setting_words and not _lemma_verb(phrase[-1]) \
                and not (j < len(lowers) and (lowers[j] in ROLES or lowers[j] in SETTINGS)):
            result.obj = " ".join(phrase)
            break
    return result


# --------------------------------------------------------------------------- plan composition


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


_LINE_TEMPLATES = {
    "setup": (
        "{other}, you came. I wasn't sure you would.",
        "So this is {place_the}. It's quieter than I remembered.",
        "{other}, look. {obj_cap} is still here.",
        "I've been carrying {obj} around all week, {other}.",
        "We said we would {vp} {time_word}. Here we are.",
        "You're late, {other}. I almost gave up on you.",
    ),
    "tension": (
        "If we {vp} now, there is no going back.",
        "You never told me the truth about {obj}.",
        "I can't keep pretending, {other}. Not here.",
        "Why now, {other}? Why {place_the}?",
        "Everyone is waiting for us to {vp}. I'm scared.",
        "You promised me, {other}. You promised.",
    ),
    "resolution": (
        "Then let's {vp} together.",
        "Whatever happens next, I'm with you, {other}.",
        "{moment} is almost here. Let's go.",
        "Keep {obj}. It was always yours.",
        "Okay. We {vp}, and then we go home.",
        "I'm glad it was you, {other}.",
    ),
}
_SOLO_TEMPLATES = {
    "setup": ("Okay. {place_the_cap}, {time_word}. Here goes.", "Nobody knows I'm here. Good.",
              "If {obj} is anywhere, it's here.", "One more time. I came here to {vp}."),
    "tension": ("If I {vp} now, there's no going back.", "Come on. Just one more try.",
                "Why does it have to be {place_the}?", "Think. Where would {obj} be?"),
    "resolution": ("There. I did it.", "{place_the_cap} can keep its secrets now.", "Now I can finally {vp}.",
                   "So that's {obj}. After all this time."),
}
CONFLICT_VERBS = frozenset({"argue", "fight", "chase", "steal", "hunt", "confront", "escape", "hide", "lose",
                            "break", "leave", "forget", "interrogate", "question"})
_SHORT_TEMPLATES = {
    "setup": ("{other}, wait.", "You came.", "Look."),
    "tension": ("Not now.", "Why, {other}?", "Tell me."),
    "resolution": ("Together, then.", "I'm here.", "Let's go."),
}


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
            people = [_Person(None, "wanderer", "n"), _Person(None, "stranger", "n")]
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
        bank = _SHORT_TEMPLATES if short else (_SOLO_TEMPLATES if solo else _LINE_TEMPLATES)
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
            prompt = f"{composition}, {atmosphere}, {look['palette']}"
            base_images.append({
                "id": f"frame_{frame:03d}",
                "prompt": prompt[:2000],
                "negative_prompt": negative,
                "seed": (self.seed + 1009 * (frame + 1)) % (MAX_SEED + 1),
            })
        return shots, base_images


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

"""What the storyboard reads from a prompt: time of day, weather, place and style.

The scene words pick the storyboard's palette, light and scenery; keeping the
vocabulary apart from the drawing lets callers (the videos_wan tests, the
keyframe_motion bench) describe a prompt without reading the renderer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Scene vocabulary: canonical value → words that select it.  Matching is on whole
# words (plural 's' allowed); the earliest mention in the prompt wins.
TIME_WORDS: dict[str, tuple[str, ...]] = {
    "dawn": ("dawn", "daybreak", "first light", "predawn"),
    "sunrise": ("sunrise", "morning", "sunup"),
    "noon": ("noon", "midday", "daytime", "afternoon", "day", "sunlit", "daylight"),
    "sunset": ("sunset", "golden hour", "sundown"),
    "dusk": ("dusk", "twilight", "evening", "blue hour"),
    "night": ("night", "midnight", "nighttime", "moonlit", "moonlight", "moon", "neon"),
}
WEATHER_WORDS: dict[str, tuple[str, ...]] = {
    "storm": ("storm", "stormy", "thunder", "thunderstorm", "lightning", "hurricane"),
    "rain": ("rain", "rainy", "raining", "drizzle", "downpour", "rainfall", "wet"),
    "snow": ("snow", "snowy", "snowing", "snowfall", "blizzard", "winter", "frost"),
    "fog": ("fog", "foggy", "mist", "misty", "haze", "hazy", "smoke"),
    "cloudy": ("cloudy", "overcast", "cloud", "grey sky", "gray sky"),
    "clear": ("clear", "sunny", "cloudless", "bright"),
}
PLACE_WORDS: dict[str, tuple[str, ...]] = {
    "rooftop": ("rooftop", "roof", "terrace"),
    "city": ("city", "street", "downtown", "town", "skyline", "alley", "avenue", "metropolis", "neon", "skyscraper"),
    "office": ("office", "cubicle", "meeting", "boardroom", "desk", "workplace"),
    "room": ("room", "bedroom", "kitchen", "apartment", "living room", "cafe", "bar", "classroom", "hallway", "home",
             "house", "indoors", "interior", "studio"),
    "forest": ("forest", "woods", "jungle", "tree", "grove", "woodland"),
    "beach": ("beach", "shore", "coast", "seaside", "boardwalk"),
    "sea": ("sea", "ocean", "wave", "boat", "ship", "harbor", "harbour", "lake", "sailing", "pier"),
    "desert": ("desert", "dune", "canyon", "sahara", "cactus"),
    "mountain": ("mountain", "peak", "cliff", "summit", "alps", "valley", "ridge"),
    "space": ("space", "galaxy", "planet", "spaceship", "orbit", "nebula", "astronaut", "cosmos", "starship"),
    "field": ("field", "meadow", "farm", "countryside", "park", "garden", "hill", "prairie"),
}

STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "noir": ("noir", "black and white", "black-and-white", "monochrome", "grayscale", "greyscale"),
    "sepia": ("sepia", "vintage", "old photo", "retro"),
    "pastel": ("pastel", "watercolor", "watercolour", "soft"),
    "vivid": ("vivid", "saturated", "comic", "pop art", "cartoon"),
}


@dataclass(frozen=True)
class SceneDescription:
    """What the storyboard understood from the prompt (recorded in provenance)."""

    time_of_day: str
    weather: str
    place: str
    style: str
    matched_words: dict[str, str]


def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"[\s-]+") for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})(?:e?s)?\b", re.IGNORECASE)


_PATTERNS = {
    kind: {value: _word_pattern(words) for value, words in table.items()}
    for kind, table in (("time", TIME_WORDS), ("weather", WEATHER_WORDS), ("place", PLACE_WORDS),
                        ("style", STYLE_WORDS))
}


# Words that hint at a value but lose to any explicit one ("a neon rooftop before
# sunrise" is at sunrise, on a rooftop).
WEAK_WORDS = frozenset({"neon", "day", "moon", "bright", "wet", "soft", "tree", "wave", "home", "smoke", "cloud",
                        "hill", "frost", "desk"})


def _first_match(kind: str, text: str, excluded: str) -> tuple[str, str] | None:
    """Earliest explicit mention in ``text`` of a ``kind`` value, skipping words the negative prompt names."""
    best: tuple[tuple[bool, int], str, str] | None = None
    for value, pattern in _PATTERNS[kind].items():
        for match in pattern.finditer(text):
            word = match.group(1).lower()
            if excluded and re.search(rf"\b{re.escape(word)}", excluded, re.IGNORECASE):
                continue
            rank = (word in WEAK_WORDS, match.start())
            if best is None or rank < best[0]:
                best = (rank, value, word)
            break
    return (best[1], best[2]) if best else None


def describe_scene(prompt: str, *, prompt_2: str | None = None, negative_prompt: str = "",
                   style: str | None = None) -> SceneDescription:
    text = prompt if not prompt_2 else f"{prompt}\n{prompt_2}"
    matched: dict[str, str] = {}
    found: dict[str, str] = {}
    for kind in ("time", "weather", "place"):
        hit = _first_match(kind, text, negative_prompt)
        if hit:
            found[kind], matched[kind] = hit
    place = found.get("place", "field")
    weather = found.get("weather", "clear")
    # Interiors default to daylight; an exterior with no time word reads as noon too.
    time_of_day = found.get("time", "noon")
    style_hit = _first_match("style", style or "", "") if style else None
    if style_hit:
        matched["style"] = style_hit[1]
    return SceneDescription(time_of_day, weather, place, style_hit[0] if style_hit else "storyboard", matched)

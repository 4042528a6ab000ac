"""Reading a film idea: the characters, place, time, weather, style, action and object it names.

``analyze_idea`` is rule-based over the words in ``planner_lexicon``: names are
capitalised tokens that are not ordinary words (with titles such as "Detective
Rhodes" and appositions such as "Ava, a street photographer"), people without
names come from the roles the idea mentions ("two friends"), and the setting is
a known place noun with its modifiers.  The offline planner composes its plan
from what this finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sparkle_motion.agents.planner_lexicon import (
    COMMON_WORDS,
    GROUPS,
    KINSHIP_NAMES,
    KNOWN_GENDER,
    NUMBER_WORDS,
    ROLE_BY_PLURAL,
    ROLE_SETTINGS,
    ROLES,
    SETTINGS,
    STYLE_LOOKS,
    STYLE_SYNONYMS,
    TIMES_OF_DAY,
    TITLES,
    VERBS,
    WEATHER,
)

MAX_CHARACTERS = 4  # more voices than this do not fit a 3–5 shot short

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’\-]*|\d+")
_SENTENCE_END = frozenset(".!?:;\"“”")
_LOCATION_PREPS = frozenset("in on at to from into across over near through above around toward towards outside "
                            "inside within beyond".split())


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
class Person:
    name: str | None
    role: str | None
    gender: str = "n"
    adjective: str | None = None


@dataclass
class IdeaAnalysis:
    """What the planner read in the idea."""

    people: list[Person] = field(default_factory=list)
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
    return (lower not in COMMON_WORDS and lower not in ROLES and lower not in ROLE_BY_PLURAL
            and lower not in NUMBER_WORDS and lower not in TIMES_OF_DAY and lower not in WEATHER
            and not lower.isdigit())


def _looks_like_name(token: _Token, tokens: list[_Token], index: int) -> bool:
    if not token.capitalised or len(token.text) < 2 and token.text not in ("I",):
        return False
    lower = token.lower
    if lower in COMMON_WORDS or lower in ROLES or lower in ROLE_BY_PLURAL or lower in TITLES:
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
    named: dict[str, Person] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        prev = tokens[index - 1] if index else None
        if token.lower in KINSHIP_NAMES:
            name = token.text[0].upper() + token.text[1:].lower()
            role, gender = KINSHIP_NAMES[token.lower]
            named.setdefault(name, Person(name, role, gender))
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
            named.setdefault(name_token.text, Person(name_token.text, title_role, gender))
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
                named[full] = Person(full, None, KNOWN_GENDER.get(parts[0].lower(), "n"))
        index += 1

    # Roles: "two friends", "a retired detective", "the couple"; an apposition
    # ("Ava, a street photographer") gives the role to the name instead.
    role_people: list[Person] = []
    lowers = [t.lower for t in tokens]
    consumed: set[int] = set()
    for i, word in enumerate(lowers):
        if i in consumed:
            continue
        two = f"{word} {lowers[i + 1]}" if i + 1 < len(lowers) else ""
        role, plural, span = None, False, 1
        if two in ROLES:
            role, span = two, 2
        elif two in ROLE_BY_PLURAL:
            role, plural, span = ROLE_BY_PLURAL[two], True, 2
        elif word in GROUPS:
            role, plural = GROUPS[word][0], True
        elif word in ROLES and not (tokens[i].capitalised and word in TITLES and i + 1 < len(tokens)
                                     and tokens[i + 1].capitalised):
            role = word
        elif word in ROLE_BY_PLURAL:
            role, plural = ROLE_BY_PLURAL[word], True
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
            role_people.append(Person(None, role, gender, adjective))

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

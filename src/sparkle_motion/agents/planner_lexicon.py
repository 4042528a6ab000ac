"""The offline planner's words: what it recognises in an idea and what it writes into a plan.

Plain data, kept apart from the code that reads ideas (``idea_analysis``) and
composes plans (``offline_planner``) so a word can be added without reading
either: roles and their plurals, places, times of day, weather, styles and
their looks, verbs, names, voices, wardrobe, camera moves and the dialogue
templates of each story stage.
"""

from __future__ import annotations

from typing import Any

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
ROLE_BY_PLURAL = {plural: role for role, (plural, _) in ROLES.items()}
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
KNOWN_GENDER = {name.lower(): g for g, names in GENDERED_NAMES.items() for name in names if g != "n"}
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

# Dialogue templates per story stage, filled with the words the planner read in the idea.
LINE_TEMPLATES = {
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
SOLO_TEMPLATES = {
    "setup": ("Okay. {place_the_cap}, {time_word}. Here goes.", "Nobody knows I'm here. Good.",
              "If {obj} is anywhere, it's here.", "One more time. I came here to {vp}."),
    "tension": ("If I {vp} now, there's no going back.", "Come on. Just one more try.",
                "Why does it have to be {place_the}?", "Think. Where would {obj} be?"),
    "resolution": ("There. I did it.", "{place_the_cap} can keep its secrets now.", "Now I can finally {vp}.",
                   "So that's {obj}. After all this time."),
}
CONFLICT_VERBS = frozenset({"argue", "fight", "chase", "steal", "hunt", "confront", "escape", "hide", "lose",
                            "break", "leave", "forget", "interrogate", "question"})
SHORT_TEMPLATES = {
    "setup": ("{other}, wait.", "You came.", "Look."),
    "tension": ("Not now.", "Why, {other}?", "Tell me."),
    "resolution": ("Together, then.", "I'm here.", "Let's go."),
}

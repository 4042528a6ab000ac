"""BCP-47 language tags (RFC 5646 "langtag" and private-use tags).

TTS backends pick a voice from the tag, so a malformed tag must be refused when
the plan is validated, not discovered when the audio comes out in the wrong
language.  The grammar is checked exactly; whether a subtag is registered with
IANA is not (that needs the registry, and new tags appear every year).
"""

from __future__ import annotations

import re

MAX_TAG_LENGTH = 64

_ALNUM = "[A-Za-z0-9]"
_LANGUAGE = r"(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})"
_SCRIPT = r"(?:-[A-Za-z]{4})?"
_REGION = r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
_VARIANTS = rf"(?:-(?:{_ALNUM}{{5,8}}|[0-9]{_ALNUM}{{3}}))*"
_EXTENSIONS = rf"(?:-[0-9A-WYZa-wyz](?:-{_ALNUM}{{2,8}})+)*"
_PRIVATE = rf"(?:-[xX](?:-{_ALNUM}{{1,8}})+)?"
_LANGTAG_RE = re.compile(rf"^{_LANGUAGE}{_SCRIPT}{_REGION}{_VARIANTS}{_EXTENSIONS}{_PRIVATE}$")
_PRIVATE_ONLY_RE = re.compile(rf"^[xX](?:-{_ALNUM}{{1,8}})+$")


def _canonical_case(tag: str) -> str:
    """RFC 5646 §2.1.1 conventions: 'en-US', 'zh-Hant-TW', 'sr-Latn'."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    after_singleton = len(parts[0]) == 1
    for part in parts[1:]:
        if after_singleton or len(part) == 1:
            after_singleton = True
            out.append(part.lower())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def normalize_language_tag(value: str) -> str:
    """Return ``value`` in canonical case, or raise ValueError saying what is wrong."""
    tag = value.strip()
    if not tag:
        raise ValueError("must be a BCP-47 language tag such as 'en-US' (got an empty string)")
    if len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"must be a BCP-47 language tag of at most {MAX_TAG_LENGTH} characters")
    if "_" in tag:
        raise ValueError(
            f"must be a BCP-47 language tag: subtags are separated by '-', not '_' "
            f"(use {tag.replace('_', '-')!r}, got {tag!r})"
        )
    if not (_LANGTAG_RE.match(tag) or _PRIVATE_ONLY_RE.match(tag)):
        raise ValueError(f"must be a BCP-47 language tag such as 'en-US' or 'pt-BR' (got {tag!r})")
    return _canonical_case(tag)

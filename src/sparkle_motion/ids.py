"""Identifier rules shared by plans, runs, stages and artifacts.

Ids become path components under the artifact root, so they are restricted to a
safe alphabet: they can never contain a separator, start with a dot or be empty.

A *name id* (``metadata.plan_id``) is only a name a person chose, so it may use
letters of any script (``le-marché-de-nuit``, ``夜市``); it still has no
separator, control character, whitespace or ``..``.  Wherever a name id reaches
the filesystem it goes through :func:`path_safe_id`, which maps it to the safe
alphabet.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata

from sparkle_motion.errors import InvalidInputError

# Letters, digits, '_', '-', '.'; starts with a letter or digit; never '..'.  Written without
# a look-ahead so that the published JSON Schema states the whole rule (with ID_MAX_LENGTH).
ID_PATTERN = r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$"
ID_MAX_LENGTH = 128
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= ID_MAX_LENGTH and bool(_ID_RE.fullmatch(value))


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a safe id, else raise InvalidInputError naming ``field``."""
    if not is_valid_id(value):
        raise InvalidInputError(
            f"must match {ID_PATTERN} without '..' (got {value!r:.80})", field=field
        )
    return value  # type: ignore[return-value]


def new_id(prefix: str) -> str:
    """A fresh random id such as ``run_3f9a1c2b7d4e``."""
    return f"{prefix}_{secrets.token_hex(6)}"


# The same pattern serves the validator and the JSON Schema (Python ``re`` and
# ECMA-262 read it alike): no whitespace, control character, '/' or '\\', no
# leading '.', no '..', 1-128 characters.
NAME_ID_PATTERN = r"^(?!.*\.\.)[^\s\x00-\x1f\x7f./\\][^\s\x00-\x1f\x7f/\\]{0,127}$"
_NAME_ID_RE = re.compile(NAME_ID_PATTERN)


def is_valid_name_id(value: object) -> bool:
    return isinstance(value, str) and bool(_NAME_ID_RE.fullmatch(value))


def validate_name_id(value: object, field: str) -> str:
    """Return ``value`` if it is a name id (letters of any script allowed), else InvalidInputError."""
    if not is_valid_name_id(value):
        raise InvalidInputError(
            f"must be 1-128 characters without whitespace, '/', '\\', control characters, a leading '.' "
            f"or '..' (got {value!r:.80})", field=field)
    return value  # type: ignore[return-value]


def path_safe_id(value: str) -> str:
    """A name id in the safe id alphabet, for use as a path component.

    An id that is already safe is returned unchanged.  Otherwise accents are
    dropped (``é`` → ``e``), anything else outside the alphabet becomes ``-``,
    and 8 hex of the name's SHA-256 are appended so two names never share a path
    (``le-marché-de-nuit`` → ``le-marche-de-nuit-1b2c3d4e``).
    """
    if is_valid_id(value):
        return value
    ascii_form = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    body = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_form).strip("-.")
    body = re.sub(r"\.{2,}", ".", body)[:100] or "id"
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    return f"{body}-{digest}" if body[0].isalnum() else f"id-{body}-{digest}"

"""Identifier rules shared by plans, runs, stages and artifacts.

Ids become path components under the artifact root, so they are restricted to a
safe alphabet: they can never contain a separator, start with a dot or be empty.
"""

from __future__ import annotations

import re
import secrets

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

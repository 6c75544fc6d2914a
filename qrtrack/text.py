"""Checks on the short texts people type (labels, key names) that every service applies alike."""
from __future__ import annotations

import re

# Control characters that str.split() does not treat as whitespace, so that collapsing spaces would keep
# them; PostgreSQL cannot store NUL at all, and none of them belongs in a name.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def has_control_characters(value: str) -> bool:
    return CONTROL_CHARACTERS.search(value) is not None

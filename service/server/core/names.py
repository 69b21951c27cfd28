"""What a valid model name is (shared by the registry and the config file)."""

from __future__ import annotations

import re

from service.server.core.bounds import quote

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_MODEL = "default"


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid model name, or None if it is."""
    if MODEL_NAME.fullmatch(name):
        return None
    return (
        f"invalid model name {quote(name)}: use 1 to 63 lowercase letters, digits, '_' or '-', "
        "starting with a letter or digit"
    )

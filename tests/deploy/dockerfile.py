"""A small Dockerfile reader: instructions with their arguments, by build stage."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field


@dataclass
class Stage:
    """One build stage: its FROM arguments and its instructions in order."""

    base: list[str]
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        """The arguments of every `name` instruction of the stage."""
        return [args for instruction, args in self.instructions if instruction == name]

    def last(self, name: str) -> str:
        """The arguments of the stage's last `name` instruction."""
        found = self.all(name)
        assert found, f"no {name} in the stage FROM {' '.join(self.base)}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The stage's ENV settings (`ENV KEY=VALUE ...` form)."""
        values = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continuation lines joined."""
    stages: list[Stage] = []
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append(Stage(args.split()))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, VOLUME)."""
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    return value

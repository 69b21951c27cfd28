"""`hebbian completion bash|zsh`: shell completion scripts generated from the argparse parser.

The parser is walked once: for every command path ("", "models", "models create", ...)
the script gets its subcommands, its options, which options take a value, the choices
of those values and of positional arguments, and which values are file names. So the
completion always matches the parser; nothing is written twice. The bash script needs
bash 4 (associative arrays); zsh runs the same function through `bashcompinit`.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FILE_METAVARS = {"FILE", "CSV", "DIR", "PATH"}
_ROOT = "."  # the path of the top-level parser ("." + " NAME" per subcommand: bash
# associative arrays refuse an empty key)


@dataclass
class _Node:
    """What one command path accepts."""

    commands: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    valued: list[str] = field(default_factory=list)  # options followed by a value
    files: list[str] = field(default_factory=list)  # options whose value is a path
    choices: dict[str, list[str]] = field(default_factory=dict)  # option -> its values
    positional_choices: list[str] = field(default_factory=list)
    positional_files: bool = False


def _takes_path(action: argparse.Action) -> bool:
    return action.type is Path or str(action.metavar or "").upper() in _FILE_METAVARS


def _walk(parser: argparse.ArgumentParser, path: str, nodes: dict[str, _Node]) -> None:
    node = nodes.setdefault(path, _Node())
    for action in parser._actions:  # argparse has no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                node.commands.append(name)
                _walk(sub, f"{path} {name}", nodes)
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            node.options.extend(action.option_strings)
            if action.nargs != 0:
                node.valued.extend(action.option_strings)
                if action.choices:
                    for option in action.option_strings:
                        node.choices[option] = [str(c) for c in action.choices]
                if _takes_path(action):
                    node.files.extend(action.option_strings)
        elif action.choices:
            node.positional_choices.extend(str(c) for c in action.choices)
        elif _takes_path(action):
            node.positional_files = True


def command_tree(
    parser: argparse.ArgumentParser, delegated: dict[str, argparse.ArgumentParser] | None = None
) -> dict[str, _Node]:
    """Every command path of `parser` (".", ". models", ". models create", ...) with what
    it accepts; `delegated` adds the flags of subcommands that parse their own arguments
    (e.g. `serve`)."""
    nodes: dict[str, _Node] = {}
    _walk(parser, _ROOT, nodes)
    for command, sub in (delegated or {}).items():
        path = f"{_ROOT} {command}"
        nodes[path] = _Node()
        _walk(sub, path, nodes)
    return nodes


def _assoc(name: str, values: dict[str, str]) -> str:
    items = " ".join(f"[{shlex.quote(key)}]={shlex.quote(value)}" for key, value in values.items())
    return f"declare -gA {name}=({items})"


def bash_script(nodes: dict[str, _Node], prog: str = "hebbian") -> str:
    """A bash completion script for `prog` from `command_tree`'s nodes."""
    fn = f"_{prog.replace('-', '_')}"
    tables = {
        "commands": {path: " ".join(node.commands) for path, node in nodes.items()},
        "options": {path: " ".join(node.options) for path, node in nodes.items()},
        "valued": {path: f" {' '.join(node.valued)} " for path, node in nodes.items()},
        "files": {path: f" {' '.join(node.files)} " for path, node in nodes.items()},
        "positional": {path: " ".join(node.positional_choices) for path, node in nodes.items()},
        "positional_files": {path: "1" for path, node in nodes.items() if node.positional_files},
        "choices": {
            f"{path} {option}": " ".join(values)
            for path, node in nodes.items() for option, values in node.choices.items()
        },
    }
    declarations = "\n".join(_assoc(f"{fn}_{name}", table) for name, table in tables.items())
    return f"""# bash completion for {prog}, generated from its argument parser by
# `{prog} completion bash`; load it with: source <({prog} completion bash)
{declarations}

{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" path="{_ROOT}" word i
    ((COMP_CWORD > 0)) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ ${{{fn}_valued[$path]}} == *" $word "* ]]; then
            ((i++))  # the option's value
        elif [[ " ${{{fn}_commands[$path]}} " == *" $word "* ]]; then
            path="$path $word"
        fi
    done
    if [[ ${{{fn}_valued[$path]}} == *" $prev "* ]]; then
        local key="$path $prev"
        if [[ -n ${{{fn}_choices[$key]}} ]]; then
            COMPREPLY=($(compgen -W "${{{fn}_choices[$key]}}" -- "$cur"))
        elif [[ ${{{fn}_files[$path]}} == *" $prev "* ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        else
            COMPREPLY=()
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${{{fn}_options[$path]}}" -- "$cur"))
    else
        local words="${{{fn}_commands[$path]}} ${{{fn}_positional[$path]}}"
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
        if [[ -n ${{{fn}_positional_files[$path]}} ]]; then
            COMPREPLY+=($(compgen -f -- "$cur"))
        fi
    fi
    return 0
}}
complete -o filenames -F {fn} {prog}
"""


def zsh_script(nodes: dict[str, _Node], prog: str = "hebbian") -> str:
    """The bash script run by zsh's `bashcompinit` (load with `source <(...)` in .zshrc)."""
    return (
        f"#compdef {prog}\n"
        f"# zsh completion for {prog}: `source <({prog} completion zsh)` in ~/.zshrc\n"
        "(( $+functions[compdef] )) || { autoload -U +X compinit && compinit }\n"
        "autoload -U +X bashcompinit && bashcompinit\n"
        + bash_script(nodes, prog)
    )


def completion_script(
    parser: argparse.ArgumentParser, shell: str,
    delegated: dict[str, argparse.ArgumentParser] | None = None,
) -> str:
    """The completion script of `parser` for `shell` ("bash" or "zsh")."""
    nodes = command_tree(parser, delegated)
    if shell == "bash":
        return bash_script(nodes, parser.prog)
    if shell == "zsh":
        return zsh_script(nodes, parser.prog)
    raise ValueError(f"no completion for shell {shell!r}; bash or zsh")

"""The README's "Try it with grpcurl" section is run as written, so it cannot drift.

Each ```sh block of that section holds one grpcurl command (a heredoc is allowed); the
block right after it shows what grpcurl prints. The test runs every command with bash,
the address 127.0.0.1:50051 replaced by the test server's, `grpcurl` resolving to the
real binary, and checks the output against the README:
- ```json blocks: the same number of responses with the same fields and list lengths
  (the numbers depend on the weights, so they are not compared);
- ```text blocks starting with "ERROR:": grpcurl fails with the same "Code:" line;
- other ```text blocks: every line shown (but "...") is a line of the output.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.grpcurl import grpcurl_binary, json_objects

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Try it with grpcurl"
ADDRESS = "127.0.0.1:50051"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def readme_examples() -> list[tuple[str, str, str]]:
    """(command, output language, shown output) of each example of the section, in order."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = BLOCK.findall(text[start : end if end != -1 else None])
    examples = []
    for index, (lang, body) in enumerate(blocks):
        if lang == "sh":
            assert body.startswith("grpcurl "), f"README sh block is not a grpcurl command: {body}"
            following = blocks[index + 1] if index + 1 < len(blocks) else ("sh", "")
            assert following[0] in ("json", "text"), f"README: no output after {body[:60]}"
            examples.append((body, *following))
    return examples


def shape(value):
    """The structure of a JSON value: keys and list lengths, not the numbers."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    """A folder holding `grpcurl` -> the real binary, to put first on PATH."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "grpcurl").symlink_to(grpcurl_binary())
    return folder


def test_the_readme_has_grpcurl_examples():
    commands = [command for command, _, _ in readme_examples()]
    assert len(commands) >= 6
    for needed in (" list", "describe", "/Process", "/StreamProcess", "Health/Check"):
        assert any(needed in command for command in commands), needed


def example_id(index: int, command: str) -> str:
    """"3-Health/Check", "0-list": the example's position and what it calls."""
    words = command.split(ADDRESS, 1)[1].split("<<")[0].split()
    return f"{index}-{words[-1].rsplit('.', 1)[-1] if words else 'command'}"


@pytest.mark.parametrize(("command", "language", "shown"), [
    pytest.param(*example, id=example_id(index, example[0]))
    for index, example in enumerate(readme_examples())
])
def test_readme_grpcurl_example_runs_as_shown(command, language, shown, hebbian_server,
                                              bin_dir):
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    result = subprocess.run(["bash", "-c", command.replace(ADDRESS, hebbian_server.target)],
                            capture_output=True, text=True, env=env, timeout=60, check=False)

    if language == "json":
        assert result.returncode == 0, result.stderr
        assert [shape(o) for o in json_objects(result.stdout)] == [
            shape(o) for o in json_objects(shown)
        ]
    elif shown.startswith("ERROR:"):
        assert result.returncode > 64, result.stdout
        (code_line,) = [line.strip() for line in shown.splitlines() if "Code:" in line]
        assert code_line in [line.strip() for line in result.stderr.splitlines()], result.stderr
    else:
        assert result.returncode == 0, result.stderr
        lines = {line.strip() for line in result.stdout.splitlines()}
        missing = [line for line in shown.splitlines() if line.strip() not in (lines | {"..."})]
        assert not missing, result.stdout

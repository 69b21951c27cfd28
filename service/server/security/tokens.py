"""Bearer tokens of the server and their scopes, read from a file or the environment.

Two scopes: `process` (Process, StreamProcess, GetModel, ListModels, ListSnapshots) and
`admin` (everything, i.e. also CreateModel, DeleteModel, UpdateModel, GetModelState,
Snapshot, Restore, Reset, and the moves between shards: ExportModel, ImportModel,
UnfreezeModel, ReleaseModel).
Tokens come from

- a token file (`--token-file`, `HEBBIAN_TOKEN_FILE`, `token_file`): one
  `SCOPE TOKEN` pair per line, `#` starts a comment line;
- the environment: `HEBBIAN_ADMIN_TOKENS` and `HEBBIAN_PROCESS_TOKENS`, each one token
  or several separated by commas (several tokens per scope allow rotation).

No token configured = authentication off. A token is 16 to 4096 visible ASCII
characters (what gRPC metadata can carry). Tokens are kept only as SHA-256 digests;
`Tokens.scope_of` compares a presented token with every configured one in constant
time, and neither messages nor `repr` ever contain a token. This module imports
neither gRPC nor TensorFlow.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROCESS = "process"
ADMIN = "admin"
SCOPES = (PROCESS, ADMIN)  # in increasing power: admin implies process
ENV_VARIABLES = {ADMIN: "HEBBIAN_ADMIN_TOKENS", PROCESS: "HEBBIAN_PROCESS_TOKENS"}
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096


class TokenError(ValueError):
    """Unusable token configuration; the message names where, never the token itself."""


@dataclass(frozen=True)
class Tokens:
    """The configured tokens as (scope, SHA-256 digest) pairs; empty = auth off."""

    entries: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Tokens:
        """Tokens from (scope, token) pairs, checked.

        Raises:
          TokenError: an unknown scope or a token that is too short, too long or not
            visible ASCII.
        """
        entries = []
        for scope, token in pairs:
            if scope not in SCOPES:
                raise TokenError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
            problem = _token_problem(token)
            if problem:
                raise TokenError(f"a {scope} token {problem}")
            entries.append((scope, _digest(token)))
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        """Whether any token is configured (authentication on)."""
        return bool(self.entries)

    def count(self, scope: str) -> int:
        """How many tokens have `scope`."""
        return sum(1 for s, _ in self.entries if s == scope)

    def scope_of(self, presented: str) -> str | None:
        """The strongest scope of the configured tokens equal to `presented`, or None.

        Every configured token is compared, with `hmac.compare_digest` on SHA-256
        digests (equal lengths), so the time taken does not tell which token, or how
        much of one, matched.
        """
        digest = _digest(presented)
        best = -1
        for scope, expected in self.entries:
            if hmac.compare_digest(digest, expected):
                best = max(best, SCOPES.index(scope))
        return SCOPES[best] if best >= 0 else None

    def __repr__(self) -> str:
        return f"Tokens(admin={self.count(ADMIN)}, process={self.count(PROCESS)})"


def load_tokens(token_file: Path | None, env: Mapping[str, str]) -> Tokens:
    """The tokens of `token_file` (if any) and of the environment variables.

    Raises:
      TokenError: an unreadable or malformed file, or a bad token (the message names
        the file and line or the variable, never the token).
    """
    pairs: list[tuple[str, str]] = []
    if token_file is not None:
        pairs += _read_file(token_file)
    for scope, variable in ENV_VARIABLES.items():
        for token in filter(None, (t.strip() for t in env.get(variable, "").split(","))):
            problem = _token_problem(token)
            if problem:
                raise TokenError(f"a token in environment variable {variable} {problem}")
            pairs.append((scope, token))
    return Tokens.of(pairs)


def _read_file(path: Path) -> list[tuple[str, str]]:
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as err:
        raise TokenError(f"cannot read token file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} must be ASCII text") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        scope, _, token = line.partition(" ")
        token = token.strip()
        where = f"line {number} of token file {path}"
        if scope not in SCOPES or not token:
            raise TokenError(f"{where}: expected 'admin TOKEN' or 'process TOKEN'")
        problem = _token_problem(token)
        if problem:
            raise TokenError(f"{where}: the token {problem}")
        pairs.append((scope, token))
    return pairs


def _token_problem(token: str) -> str | None:
    """Why `token` is unusable (without quoting it), or None."""
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        return f"must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters long"
    if not all("!" <= c <= "~" for c in token):
        return "must be visible ASCII characters without spaces"
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

"""Producer tokens: who may send which tags, and who may read the journal.

BUS_TOKENS names a file of lines `SHA256-HEX  PATTERNS  NAME`: the token's
SHA-256 (the token itself is never stored), comma-separated Fluentd tag
patterns it may emit, and a name for logs and errors. A pattern `@journal`
grants the journal (GET /events, replay, the console) instead of a tag.
`bus tokens new NAME PATTERNS` makes a token and prints its line.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, Forbidden, RouteError, Unauthorized
from .tags import TagPattern, compile_patterns

JOURNAL = "@journal"


@dataclass(frozen=True)
class Token:
    digest: bytes = field(repr=False)
    name: str
    patterns: tuple[str, ...]
    journal: bool
    pattern: TagPattern | None = field(default=None, repr=False)

    def may_emit(self, tag: str) -> bool:
        return self.pattern is not None and self.pattern.matches(tag)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(path: Path) -> list[Token]:
    """Parse the tokens file; a bad line stops start-up with its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"BUS_TOKENS={path}: cannot read it ({exc.strerror})") from None
    tokens = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
            raise ConfigError(f"{path}:{number}: expected `SHA256-HEX  PATTERNS  NAME` (make one with `bus tokens new`)")
        patterns = tuple(p for p in fields[1].split(",") if p != JOURNAL)
        try:
            pattern = compile_patterns(list(patterns)) if patterns else None
        except RouteError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        tokens.append(Token(bytes.fromhex(fields[0]), fields[2], patterns, JOURNAL in fields[1].split(","), pattern))
    if not tokens:
        raise ConfigError(f"BUS_TOKENS={path} holds no tokens; every request would be refused")
    return tokens


def authenticate(tokens: list[Token], authorization: str | None) -> Token:
    """The token an `Authorization: Bearer ...` header carries, or Unauthorized."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("this bus needs `Authorization: Bearer <token>`")
    wanted = digest(presented.strip())
    found = None
    # Compare against every token, in constant time each, so timing says nothing about which matched.
    for token in tokens:
        if hmac.compare_digest(token.digest, wanted):
            found = token
    if found is None:
        raise Unauthorized("unknown token")
    return found


def check_tag(token: Token, tag: str) -> None:
    if not token.may_emit(tag):
        raise Forbidden(f"token {token.name!r} may not send tag {tag!r}")


def check_journal(token: Token) -> None:
    if not token.journal:
        raise Forbidden(f"token {token.name!r} may not read or replay the journal (it needs @journal)")


def new_token() -> tuple[str, str]:
    """A fresh token and the hex digest to put in the tokens file."""
    token = "bus_" + secrets.token_urlsafe(32)
    return token, digest(token).hex()

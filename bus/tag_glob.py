"""Fluentd <match> glob syntax read into a small pattern tree, within size limits (pure).

The tree's vocabulary is exactly the regex pieces the old port of Fluentd's
GlobMatchPattern (lib/fluent/match.rb) emitted, so every matcher built from
it (tags.py's regex fast path, tag_nfa.py's automaton) keeps its semantics:
'*' is `[^.]*`, '**' is `.*`, '**.' is `(?:.*\\.|\\A)`, 'a.**' also matches 'a'.
The parser is a loop with an explicit stack, never recursion, and refuses
patterns past the limits below before anything is built from them.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import RouteError

# A route pattern is a line of a TOML file, not a program: these bound what a
# user (GET /events?tag=) can make us build. Fluentd configs in the wild stay far below.
MAX_PATTERN_LENGTH = 512
MAX_BRACE_DEPTH = 8
MAX_ALTERNATIVES = 64
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.*{},-]+")


class Op(enum.Enum):
    """The glob pieces that are not literal text; each value is its regex."""

    STAR = r"[^.]*"  # '*': any run within one tag part
    ANY = r".*"  # '**': any run, across parts
    PART_END = r"(?![^.])"  # 'a.**' matching 'a': the next character is '.' or the end
    START = r"\A"  # '**.' matching zero parts: only at the very start of the tag


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Alt:
    options: tuple[tuple[Node, ...], ...]


Node = Lit | Alt | Op
_ZERO_OR_MORE_PARTS = Alt(((Op.ANY, Lit(".")), (Op.START,)))


def parse(pattern: str) -> tuple[Node, ...]:
    """The tree of one glob ('a.*', 'a.**', '**.b', '{x,y}.z'), or RouteError saying what to change."""
    if not isinstance(pattern, str) or not pattern:
        raise RouteError("a match pattern is empty")
    shown = repr(pattern) if len(pattern) <= 80 else repr(pattern[:40]) + "..."
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RouteError(f"match pattern {shown} is {len(pattern)} characters long; the limit is "
                         f"{MAX_PATTERN_LENGTH}: split it into several patterns (a route's match may be a list)")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise RouteError(
            f"match pattern {shown} has characters a tag cannot have; "
            "use tag parts, '.', '*', '**' and '{a,b}'"
        )
    seqs: list[list[Node]] = [[]]  # the sequence being built at each open brace, outermost first
    options: list[list[tuple[Node, ...]]] = []  # the finished alternatives of each open brace
    alternatives = 0
    dot = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern[i : i + 2] == "**":
            if dot:
                seqs[-1].append(Op.PART_END)
                dot = False
            if pattern[i + 2 : i + 3] == ".":
                seqs[-1].append(_ZERO_OR_MORE_PARTS)
                i += 3
            else:
                seqs[-1].append(Op.ANY)
                i += 2
            continue
        if dot:
            seqs[-1].append(Lit("."))
            dot = False
        if c == ".":
            dot = True
        elif c == "*":
            seqs[-1].append(Op.STAR)
        elif c == "{":
            if len(options) == MAX_BRACE_DEPTH:
                raise RouteError(f"match pattern {shown} nests '{{' deeper than {MAX_BRACE_DEPTH} levels; "
                                 "flatten it or split it into several patterns (a route's match may be a list)")
            options.append([])
            seqs.append([])
        elif c in ",}" and options:
            alternatives += 1
            if alternatives > MAX_ALTERNATIVES:
                raise RouteError(f"match pattern {shown} has more than {MAX_ALTERNATIVES} '{{a,b}}' alternatives; "
                                 "split it into several patterns (a route's match may be a list)")
            options[-1].append(tuple(seqs.pop()))
            if c == ",":
                seqs.append([])
            else:
                seqs[-1].append(Alt(tuple(options.pop())))
        else:
            # Outside braces ',' and '}' are plain characters, as they were in Fluentd's port.
            seqs[-1].append(Lit(c))
        i += 1
    if options:
        raise RouteError(f"match pattern {shown} has an unclosed '{{'")
    if dot:
        raise RouteError(f"match pattern {shown} ends with '.'")
    return tuple(seqs[0])

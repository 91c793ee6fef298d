"""Tag validation and Fluentd <match> pattern compilation into matchers linear in the tag (pure)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InvalidTag
from .tag_glob import MAX_ALTERNATIVES, MAX_BRACE_DEPTH, MAX_PATTERN_LENGTH, Alt, Lit, Node, Op, parse
from .tag_nfa import TagNfa, compile_nfa

__all__ = ["MAX_TAG_LENGTH", "MAX_PATTERN_LENGTH", "MAX_BRACE_DEPTH", "MAX_ALTERNATIVES", "TagPattern",
           "validate_tag", "compile_pattern", "compile_patterns"]

MAX_TAG_LENGTH = 255
_TAG = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# A pattern whose braces spell out more plain globs than this goes to the automaton.
_MAX_REGEX_EXPANSION = 16


def validate_tag(tag: str) -> str:
    """Return the tag unchanged, or raise InvalidTag saying what is wrong with it."""
    if not isinstance(tag, str) or not tag:
        raise InvalidTag("tag is empty: give a tag such as 'api.orders'")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidTag(f"tag is {len(tag)} characters long; the limit is {MAX_TAG_LENGTH}")
    if not _TAG.fullmatch(tag):
        raise InvalidTag(
            f"tag {tag[:80]!r} is invalid: use dot-separated parts of letters, digits, '_' and '-' "
            "(e.g. 'api.orders'), with no empty part"
        )
    return tag


@dataclass(frozen=True)
class TagPattern:
    """One or several compiled globs: `matches(tag)` is true when any of them matches the whole tag.

    Ordinary globs ('api.*', 'a.{b,c}.**') run as a regex, the fastest matcher
    Python has, but only in shapes where its backtracking is provably linear
    (see _regex_is_linear); every other glob runs on the automaton of
    tag_nfa.py, linear in the tag for any pattern.
    """

    patterns: tuple[str, ...]
    regex: re.Pattern[str] | None = field(repr=False)
    nfa: TagNfa | None = field(repr=False)

    def matches(self, tag: str) -> bool:
        return bool(self.regex is not None and self.regex.match(tag)) or (
            self.nfa is not None and self.nfa.matches(tag))


def compile_pattern(pattern: str) -> TagPattern:
    """Compile one Fluentd glob ('a.*', 'a.**', '**.b', '{x,y}.z'), or RouteError saying what to change.

    Semantics are Fluentd's GlobMatchPattern (lib/fluent/match.rb), so routes
    behave exactly like the <match> blocks users already have: '*' is one
    part, '**' is zero or more parts ('a.**' matches 'a' too), '{x,y}' are
    alternatives that may themselves hold globs.
    """
    return compile_patterns([pattern])


def compile_patterns(patterns: list[str]) -> TagPattern:
    """One matcher for several patterns (a route's list, a token's), so a route costs one call per tag."""
    plain: list[tuple[Node, ...]] = []
    other: list[tuple[Node, ...]] = []
    for pattern in patterns:
        tree = parse(pattern)
        expanded = _expand(tree)
        if expanded is not None and all(map(_regex_is_linear, expanded)):
            plain += expanded
        else:
            other.append(tree)
    regex = re.compile(r"\A(?:" + "|".join(_regex(seq) + r"\Z" for seq in plain) + ")") if plain else None
    return TagPattern(tuple(patterns), regex, compile_nfa(other) if other else None)


def _regex(seq: tuple[Node, ...]) -> str:
    out = []
    for node in seq:
        if isinstance(node, Lit):
            out.append(re.escape(node.text))
        elif isinstance(node, Alt):
            out.append("(?:" + "|".join(map(_regex, node.options)) + ")")
        else:
            out.append(node.value)
    return "".join(out)


def _expand(seq: tuple[Node, ...]) -> list[tuple[Node, ...]] | None:
    """The brace-free sequences that together match what seq matches, or None if there are too many."""
    expanded: list[tuple[Node, ...]] = [()]
    for node in seq:
        if isinstance(node, Alt):
            options: list[tuple[Node, ...]] = []
            for option in node.options:
                inner = _expand(option)
                if inner is None:
                    return None
                options += inner
            expanded = [done + option for done in expanded for option in options]
        else:
            expanded = [done + (node,) for done in expanded]
        if len(expanded) > _MAX_REGEX_EXPANSION:
            return None
    return expanded


def _regex_is_linear(seq: tuple[Node, ...]) -> bool:
    """Whether re's backtracking on this brace-free sequence stays O(len(tag) x len(seq)).

    A '.' or PART_END pins the match to a part boundary: the first one after
    where the segment began, so every segment between pins starts at one
    position only. A segment with at most one quantifier has one way to reach
    its pin (the quantifier's length is what the literals leave), so a failure
    later never re-enters it with a new choice: re tries each segment once,
    paying its length for the quantifier's retreat. Two quantifiers in one
    segment ('*a*') or '**' before the end ('**.x') break that, and go to the automaton.
    """
    quantifiers = 0
    for n, node in enumerate(seq):
        if node is Op.PART_END or node == Lit("."):
            quantifiers = 0
        elif node is Op.STAR or node is Op.ANY:
            quantifiers += 1
            if quantifiers > 1 or (node is Op.ANY and n != len(seq) - 1):
                return False
    return True

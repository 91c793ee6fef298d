"""Tag validation and Fluentd <match> pattern compilation (pure)."""
from __future__ import annotations

import re

from .errors import InvalidTag, RouteError

MAX_TAG_LENGTH = 255
_TAG = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_.*{},-]+")


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


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one Fluentd glob ('a.*', 'a.**', '**.b', '{x,y}.z') into an anchored regex.

    A faithful port of Fluentd's GlobMatchPattern (lib/fluent/match.rb) so that
    routes behave exactly like the <match> blocks users already have: '*' is one
    part, '**' is zero or more parts ('a.**' matches 'a' too), '{x,y}' are
    alternatives that may themselves hold globs.
    """
    if not isinstance(pattern, str) or not pattern:
        raise RouteError("a match pattern is empty")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise RouteError(
            f"match pattern {pattern!r} has characters a tag cannot have; "
            "use tag parts, '.', '*', '**' and '{a,b}'"
        )
    stack: list[list[str]] = []
    regex = [""]
    dot = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern[i : i + 2] == "**":
            if dot:
                # 'a.**' must match 'a' itself, but never 'ab'.
                regex[-1] += r"(?![^.])"
                dot = False
            if pattern[i + 2 : i + 3] == ".":
                regex[-1] += r"(?:.*\.|\A)"
                i += 3
            else:
                regex[-1] += ".*"
                i += 2
            continue
        if dot:
            regex[-1] += r"\."
            dot = False
        if c == ".":
            dot = True
        elif c == "*":
            regex[-1] += r"[^.]*"
        elif c == "{":
            stack.append([])
            regex.append("")
        elif c == "}" and stack:
            stack[-1].append(regex.pop())
            regex[-1] += "(?:" + "|".join(stack.pop()) + ")"
        elif c == "," and stack:
            stack[-1].append(regex.pop())
            regex.append("")
        else:
            regex[-1] += re.escape(c)
        i += 1
    if stack:
        raise RouteError(f"match pattern {pattern!r} has an unclosed '{{'")
    if dot:
        raise RouteError(f"match pattern {pattern!r} ends with '.'")
    return re.compile(r"\A" + regex[-1] + r"\Z")


def compile_patterns(patterns: list[str]) -> re.Pattern[str]:
    """One regex for several patterns, so a route costs one match per tag."""
    parts = [compile_pattern(p).pattern for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts))

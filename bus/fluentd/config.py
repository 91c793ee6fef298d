"""Read a Fluentd config file (v1 syntax) into a tree of sections, and Fluentd's value types (pure).

Nested `<section arg>` blocks, `key value` lines with double-quoted,
single-quoted, bare and multi-line JSON values, and `#` comments, as Fluentd's
own parser reads them; routes.py turns the tree into routes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class Section:
    """One `<name arg>` block (the file itself is the section named "")."""

    name: str
    arg: str
    line: int
    params: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)
    sections: list[Section] = field(default_factory=list)

    def sub(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


# ---------------------------------------------------------------------------- parsing

_SECTION_OPEN = re.compile(r"<\s*([A-Za-z0-9_@.-]+)\s*([^>]*?)\s*>")
_SECTION_CLOSE = re.compile(r"</\s*([A-Za-z0-9_@.-]+)\s*>")
_KEY = re.compile(r"[^\s<>]+")
_COMMENT_TAIL = re.compile(r"[ \t]*(?:#.*)?\Z")


def parse(text: str, path: str = "fluentd.conf") -> Section:
    """The config as a tree of sections; ConfigError names the file, the line and the problem."""
    root = Section("", "", 0)
    stack = [root]
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if m := _SECTION_CLOSE.fullmatch(_strip_comment(line)):
            if len(stack) == 1 or stack[-1].name != m.group(1):
                expected = f"</{stack[-1].name}>" if len(stack) > 1 else "no closing tag"
                raise ConfigError(f"{where}: unexpected </{m.group(1)}>; expected {expected}")
            stack.pop()
            continue
        if line.startswith("<"):
            m = _SECTION_OPEN.fullmatch(_strip_comment(line))
            if not m:
                raise ConfigError(f"{where}: cannot read the section tag {line!r}")
            section = Section(m.group(1), m.group(2), number)
            stack[-1].sections.append(section)
            stack.append(section)
            continue
        found = _KEY.match(line)
        if found is None:
            raise ConfigError(f"{where}: cannot read {line!r} as a parameter (NAME VALUE)")
        key = found.group(0)
        rest = line[len(key):].lstrip()
        value, number = _value(rest, lines, number, where)
        stack[-1].params[key] = (value, number)
    if len(stack) > 1:
        raise ConfigError(f"{path}:{stack[-1].line}: <{stack[-1].name}> is never closed")
    return root


def _strip_comment(line: str) -> str:
    return re.sub(r"[ \t]+#.*\Z", "", line)


def _value(rest: str, lines: list[str], number: int, where: str) -> tuple[str, int]:
    """The value starting at `rest` (which may continue on the next lines for JSON); the line after it."""
    if rest[:1] in ("[", "{"):
        text = rest
        while True:
            try:
                return json.dumps(json.loads(text)), number
            except json.JSONDecodeError:
                if number >= len(lines):
                    break
                text += "\n" + lines[number]
                number += 1
        # in Fluentd a value like `{a}` that is not JSON is read as a string
        if "\n" not in text:
            return _bare(rest), number
        raise ConfigError(f"{where}: a JSON value that never ends")
    if rest[:1] == '"':
        value, tail = _double_quoted(rest, where)
    elif rest[:1] == "'":
        value, tail = _single_quoted(rest, where)
    else:
        return _bare(rest), number
    if not _COMMENT_TAIL.fullmatch(tail):
        raise ConfigError(f"{where}: unexpected text after the quoted value: {tail.strip()!r}")
    return value, number


def _bare(rest: str) -> str:
    # A comment starts at a '#' after whitespace; "a#b" keeps its '#' (Fluentd v1).
    return _strip_comment(rest).rstrip()


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "r": "\r", "n": "\n", "t": "\t", "f": "\f", "b": "\b"}


def _double_quoted(rest: str, where: str) -> tuple[str, str]:
    out: list[str] = []
    i = 1
    while i < len(rest):
        c = rest[i]
        if c == '"':
            return "".join(out), rest[i + 1:]
        if c == "\\" and i + 1 < len(rest):
            nxt = rest[i + 1]
            if nxt.isalnum() and nxt not in _ESCAPES:
                raise ConfigError(f"{where}: unknown escape '\\{nxt}' in a double-quoted value")
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise ConfigError(f"{where}: a double-quoted value is not closed on its line")


def _single_quoted(rest: str, where: str) -> tuple[str, str]:
    out, i = [], 1
    while i < len(rest):
        if rest.startswith("\\'", i) or rest.startswith("\\\\", i):
            out.append(rest[i + 1])
            i += 2
            continue
        if rest[i] == "'":
            return "".join(out), rest[i + 1:]
        out.append(rest[i])
        i += 1
    raise ConfigError(f"{where}: a single-quoted value is not closed on its line")


# ---------------------------------------------------------------------------- values


def seconds(value: str) -> float:
    """Fluentd's :time type: 30, 1.5, 30s, 5m, 2h, 1d."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not m:
        raise ValueError(f"{value!r} is not a time such as 30, 30s, 5m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("", "true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def headers(value: str) -> dict[str, str]:
    """Fluentd's :hash type: a JSON object, or k1:v1,k2:v2."""
    if value.lstrip().startswith("{"):
        parsed = json.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}
    out = {}
    for item in filter(None, (i.strip() for i in value.split(","))):
        key, sep, val = item.partition(":")
        if not sep:
            raise ValueError(f"{item!r} is not key:value")
        out[key.strip()] = val.strip()
    return out

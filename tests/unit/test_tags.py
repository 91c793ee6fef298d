"""Tags and Fluentd <match> patterns (SPEC.md, "Tags and routes").

The pattern table is Fluentd's own: the examples from its documentation
("Config File Syntax" -> "How do the match patterns work?") and the glob cases
of fluent/fluentd test/test_match.rb (test_simple, test_wildcard,
test_recursive_wildcard, test_or, test_multi_pattern_or). Regex patterns
(`/.../`) are not part of the bus contract and are left out.
"""
from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from bus.errors import InvalidTag, RouteError
from bus.tag_glob import parse
from bus.tag_nfa import compile_nfa
from bus.tags import (
    MAX_ALTERNATIVES,
    MAX_BRACE_DEPTH,
    MAX_PATTERN_LENGTH,
    MAX_TAG_LENGTH,
    compile_pattern,
    compile_patterns,
    validate_tag,
)

# --------------------------------------------------------------------------- tags

@pytest.mark.parametrize(
    "tag",
    [
        "a",
        "api",
        "api.orders",
        "a.b.c.d.e",
        "Api.ORDERS",
        "svc-1.v2_beta",
        "_._",
        "-",
        "0.1.2",
        "a" * 255,
        ".".join(["ab"] * 85),  # 254 chars, many parts
    ],
    ids=lambda t: t if len(t) < 30 else f"{len(t)}-chars",
)
def test_valid_tag_is_returned_unchanged(tag):
    assert validate_tag(tag) == tag


def test_tag_of_exactly_255_chars_is_accepted():
    assert MAX_TAG_LENGTH == 255
    tag = "a" * 127 + "." + "b" * 127
    assert len(tag) == 255
    assert validate_tag(tag) == tag


def test_tag_of_256_chars_is_refused_with_its_length_and_the_limit():
    tag = "a" * 128 + "." + "b" * 127
    assert len(tag) == 256
    with pytest.raises(InvalidTag) as exc:
        validate_tag(tag)
    assert "256" in str(exc.value)
    assert "255" in str(exc.value)


@pytest.mark.parametrize("tag", ["", None], ids=["empty-string", "none"])
def test_empty_tag_is_refused(tag):
    with pytest.raises(InvalidTag, match="empty"):
        validate_tag(tag)


@pytest.mark.parametrize(
    "tag",
    [
        "a..b",
        ".a",
        "a.",
        ".",
        "..",
        "a/b",
        "a b",
        " a",
        "a ",
        "a\tb",
        "a\nb",
        "a\n",
        "a\x00b",
        "a*",
        "a.*",
        "a.{b,c}",
        "a:b",
        "a@b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a+b",
        "a~b",
        "ä",
        "api.ordérs",
        "数据.x",
        "١٢٣",  # non-ASCII digits
        "ａ",  # fullwidth latin a
        "a\u200bb",  # zero width space
    ],
    ids=repr,
)
def test_tag_with_empty_part_or_bad_character_is_refused(tag):
    with pytest.raises(InvalidTag) as exc:
        validate_tag(tag)
    assert "invalid" in str(exc.value)


def test_refusal_explains_what_a_tag_may_contain():
    with pytest.raises(InvalidTag) as exc:
        validate_tag("a..b")
    message = str(exc.value)
    assert "'a..b'" in message
    assert "empty part" in message


def test_non_string_tag_is_refused():
    with pytest.raises(InvalidTag):
        validate_tag(b"api.orders")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- patterns

# (pattern, tag, matches?) -- every row from Fluentd's docs or test/test_match.rb.
FLUENTD_DOCS = [
    # `*` matches a single tag part.
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    # `**` matches zero or more tag parts.
    ("a.**", "a", True),
    ("a.**", "a.b", True),
    ("a.**", "a.b.c", True),
    # `{X,Y,Z}` matches X, Y, or Z.
    ("{a,b}", "a", True),
    ("{a,b}", "b", True),
    ("{a,b}", "c", False),
    # nested with * and ** inside {...}
    ("a.{b,c}.*", "a.b.x", True),
    ("a.{b,c}.*", "a.c.x", True),
    ("a.{b,c}.*", "a.b", False),
    ("a.{b,c}.*", "a.d.x", False),
    ("a.{b,c}.*", "a.b.x.y", False),
    ("a.{b,c.**}", "a.b", True),
    ("a.{b,c.**}", "a.c", True),
    ("a.{b,c.**}", "a.c.d", True),
    ("a.{b,c.**}", "a.c.d.e", True),
    ("a.{b,c.**}", "a.b.c", False),
    ("a.{b,c.**}", "a.d", False),
    # `**` alone is Fluentd's match-everything.
    ("**", "a", True),
    ("**", "a.b.c", True),
    ("**.b", "b", True),
    ("**.b", "a.b", True),
    ("**.b", "x.y.b", True),
    ("**.b", "a.bb", False),
    ("**.b", "b.a", False),
]

FLUENTD_TEST_MATCH_RB = [
    # test_simple
    ("a", "a", True),
    ("a.b", "a.b", True),
    ("a", "b", False),
    ("a.b", "aab", False),
    # test_wildcard
    ("a*", "a", True),
    ("a*", "ab", True),
    ("a*", "abc", True),
    ("*a", "a", True),
    ("*a", "ba", True),
    ("*a", "cba", True),
    ("*a*", "a", True),
    ("*a*", "ba", True),
    ("*a*", "ac", True),
    ("*a*", "bac", True),
    ("a*", "a.b", False),
    ("a*", "ab.c", False),
    ("a*", "ba", False),
    ("*a", "ab", False),
    ("a.*", "a.b", True),
    ("a.*", "a.c", True),
    ("a.*", "ab", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c.c", True),
    ("a.*.c", "a.c", False),
    # test_recursive_wildcard
    ("a.**", "a", True),
    ("a.**", "ab", False),
    ("a.**", "abc", False),
    ("a.**", "a.b", True),
    ("a.**", "ab.c", False),
    ("a.**", "ab.d.e", False),
    ("a**", "a", True),
    ("a**", "ab", True),
    ("a**", "abc", True),
    ("a**", "a.b", True),
    ("a**", "ab.c", True),
    ("a**", "ab.d.e", True),
    ("**.a", "a", True),
    ("**.a", "ba", False),
    ("**.a", "c.ba", False),
    ("**.a", "b.a", True),
    ("**.a", "cb.a", True),
    ("**.a", "d.e.a", True),
    ("**a", "a", True),
    ("**a", "ba", True),
    ("**a", "c.ba", True),
    ("**a", "b.a", True),
    ("**a", "cb.a", True),
    ("**a", "d.e.a", True),
    # test_or
    ("a.{b,c}", "a.b", True),
    ("a.{b,c}", "a.c", True),
    ("a.{b,c}", "a.d", False),
    ("a.{b,c}.**", "a.b", True),
    ("a.{b,c}.**", "a.c", True),
    ("a.{b,c}.**", "a.d", False),
    ("a.{b,c}.**", "a.cd", False),
    ("a.{b.**,c}", "a.b", True),
    ("a.{b.**,c}", "a.b.c", True),
    ("a.{b.**,c}", "a.c", True),
    ("a.{b.**,c}", "a.c.d", False),
]

# Further cases in the same spirit: part boundaries are never crossed by
# `*`, and `**` in the middle of a pattern spans zero or more whole parts.
PART_BOUNDARIES = [
    ("a.**.z", "a.z", True),
    ("a.**.z", "a.b.z", True),
    ("a.**.z", "a.b.c.z", True),
    ("a.**.z", "az", False),
    ("a.**.z", "ab.z", False),
    ("a.**.z", "a.bz", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("*.*", "a.b.c", False),
    ("api.orders", "api.orders", True),
    ("api.orders", "api.orders.eu", False),
    ("api.orders", "xapi.orders", False),
    ("api.orders", "api_orders", False),  # '.' is literal, not regex any-char
    ("api.*", "api-x.y", False),
    ("svc-1.*", "svc-1.x", True),
    ("svc_1.*", "svc_1.x", True),
    ("{api,web}.**", "web", True),
    ("{api,web}.**", "web.a.b", True),
    ("{api,web}.**", "webapi", False),
    ("{a.{b,c},d}", "a.c", True),
    ("{a.{b,c},d}", "d", True),
    ("{a.{b,c},d}", "a.d", False),
    ("Api.Orders", "api.orders", False),  # case-sensitive, as in Fluentd
]

SOURCES = [("docs", FLUENTD_DOCS), ("test_match.rb", FLUENTD_TEST_MATCH_RB), ("bus", PART_BOUNDARIES)]
ROWS = [row for _, rows in SOURCES for row in rows]
ROW_IDS = [f"{source}: {p} {'~' if e else '!~'} {t}" for source, rows in SOURCES for p, t, e in rows]


@pytest.mark.parametrize("pattern,tag,expected", ROWS, ids=ROW_IDS)
def test_pattern_matches_tags_as_fluentd_does(pattern, tag, expected):
    assert bool(compile_pattern(pattern).matches(tag)) is expected


# test_multi_pattern_or: Fluentd's `<match a.b a.c>` is a route's list of patterns.
MULTI = [
    (["a.b", "a.c"], "a.b", True),
    (["a.b", "a.c"], "a.c", True),
    (["a.b", "a.c"], "a.d", False),
    (["a.b.**", "a.c.**"], "a.b", True),
    (["a.b.**", "a.c.**"], "a.c", True),
    (["a.b.**", "a.c.**"], "a.d", False),
    (["a.b.**", "a.c.**"], "a.cd", False),
    (["a.b.**", "a.c"], "a.b", True),
    (["a.b.**", "a.c"], "a.b.c", True),
    (["a.b.**", "a.c"], "a.c", True),
    (["a.b.**", "a.c"], "a.c.d", False),
    # docs: <match a.** b.*>
    (["a.**", "b.*"], "a", True),
    (["a.**", "b.*"], "a.b.c", True),
    (["a.**", "b.*"], "b.d", True),
    (["a.**", "b.*"], "b", False),
    (["a.**", "b.*"], "b.d.e", False),
]


@pytest.mark.parametrize(
    "patterns,tag,expected", MULTI, ids=[f"{' '.join(p)} {'~' if e else '!~'} {t}" for p, t, e in MULTI]
)
def test_several_patterns_match_when_any_one_matches(patterns, tag, expected):
    assert bool(compile_patterns(patterns).matches(tag)) is expected


def test_several_patterns_stay_anchored_each():
    # Joining anchored patterns with '|' must not let one pattern match a prefix.
    rx = compile_patterns(["a", "b"])
    assert not rx.matches("a.x")
    assert not rx.matches("xb")
    assert rx.matches("b")


def test_star_matches_exactly_one_part():
    rx = compile_pattern("a.*")
    assert rx.matches("a.b")
    assert not rx.matches("a")
    assert not rx.matches("a.b.c")


def test_double_star_matches_zero_or_more_parts():
    rx = compile_pattern("a.**")
    assert rx.matches("a")
    assert rx.matches("a.b")
    assert rx.matches("a.b.c.d.e.f")
    assert not rx.matches("ab")


def test_braces_are_alternatives_that_may_hold_globs():
    rx = compile_pattern("a.{b,c.**}")
    assert rx.matches("a.b")
    assert rx.matches("a.c.d.e")
    assert not rx.matches("a.b.c")


# --------------------------------------------------------------------------- bad patterns

@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "a.{b,c",
        "{a",
        "a.",
        "a.b.",
        "/a\\..*/",  # Fluentd regex patterns are not supported
        "a b",  # Fluentd's space-separated list: use a TOML list instead
        "a/b",
        "a?",
        "a[bc]",
        "a.(b|c)",
        "a.$",
        "ä.*",
        "#{ENV['X']}",
    ],
    ids=repr,
)
def test_malformed_pattern_is_refused_with_route_error(pattern):
    with pytest.raises(RouteError) as exc:
        compile_pattern(pattern)
    if pattern:
        assert repr(pattern) in str(exc.value)


def test_pattern_characters_are_never_regex_syntax():
    # Only tag characters, '.', '*', '{', ',' and '}' are allowed, so regex
    # metacharacters can never sneak into the compiled expression.
    for pattern in ["a+", "a|b", "(a)", "a^", "a\\.b"]:
        with pytest.raises(RouteError):
            compile_pattern(pattern)


def test_compile_patterns_refuses_a_bad_member():
    with pytest.raises(RouteError):
        compile_patterns(["a.*", "a.{b"])


def test_malformed_pattern_is_refused_by_the_automaton_path_too():
    # '**.' in the middle sends a pattern to the automaton; its errors stay the same.
    with pytest.raises(RouteError, match="unclosed"):
        compile_patterns(["a.**.b", "**.{c"])


# --------------------------------------------------------------------------- size limits

def test_pattern_longer_than_the_limit_is_refused_with_the_limit():
    assert MAX_PATTERN_LENGTH == 512
    compile_pattern("a" * 512)
    with pytest.raises(RouteError) as exc:
        compile_pattern("a" * 513)
    assert "513" in str(exc.value) and "512" in str(exc.value)
    assert "several patterns" in str(exc.value)


def test_500_nested_braces_are_refused_with_route_error_not_recursion_error():
    with pytest.raises(RouteError):
        compile_pattern("{" * 500 + "a" + "}" * 500)


def test_braces_nested_deeper_than_the_limit_are_refused_with_the_limit():
    assert MAX_BRACE_DEPTH == 8
    assert compile_pattern("{" * 8 + "a" + "}" * 8).matches("a")
    with pytest.raises(RouteError) as exc:
        compile_pattern("{" * 9 + "a" + "}" * 9)
    assert "deeper than 8" in str(exc.value)
    assert "flatten it" in str(exc.value)


def test_more_alternatives_than_the_limit_are_refused_with_the_limit():
    assert MAX_ALTERNATIVES == 64
    assert compile_pattern("{" + ",".join(["a"] * 64) + "}").matches("a")
    with pytest.raises(RouteError) as exc:
        compile_pattern("{" + ",".join(["a"] * 65) + "}")
    assert "more than 64" in str(exc.value)


# --------------------------------------------------------------------------- linear time

ADVERSARIAL = [
    # issue #13: nested (?:.*\.|\A) backtracked for hours on a 121-part tag.
    ("**." * 8 + "zz", ".".join(["a"] * 121)),
    ("**." * 40 + "zz", ".".join(["a"] * 127)),
    ("*a" * 30 + "*b", "a" * 255),  # '*a*a...*b': one part, C(255, 30) splits for re
    ("{a,a}" * 30 + "x", "a" * 30),  # 2**30 ways through the braces
    ("{**.,}" * 20 + "a.b", ".".join(["a"] * 127)),
    ("**a" * 40 + "b", "a" * 255),
]


@pytest.mark.parametrize("pattern,tag", ADVERSARIAL, ids=[p[:24] for p, _ in ADVERSARIAL])
def test_any_pattern_matches_in_time_linear_in_the_tag(pattern, tag):
    compiled = compile_pattern(pattern)
    started = time.perf_counter()
    assert compiled.matches(tag) is False
    # Exponential backtracking takes minutes here; linear takes milliseconds.
    assert time.perf_counter() - started < 1.0
    assert compiled.regex is None, "a pattern re would backtrack on must run on the automaton"
    matched, steps = compiled.nfa.run(tag)
    assert matched is False
    assert steps <= (len(tag) + 1) * len(compiled.nfa.program)


@pytest.mark.parametrize("pattern", ["api.*", "api.**", "**", "a.*.c", "{api,web}.**", "a.{b,c}.*", "a{b,c.**}"])
def test_ordinary_patterns_run_on_the_regex_fast_path(pattern):
    # Route matching runs on every accepted event: these shapes cannot backtrack badly in re.
    assert compile_pattern(pattern).nfa is None


# --------------------------------------------------------------------------- same answers as the old regex

def _old_compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regex port this module used before issue #13: the oracle, on inputs small enough for it."""
    if not pattern or not re.fullmatch(r"[A-Za-z0-9_.*{},-]+", pattern):
        raise RouteError(pattern)
    stack: list[list[str]] = []
    regex = [""]
    dot = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern[i : i + 2] == "**":
            if dot:
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
    if stack or dot:
        raise RouteError(pattern)
    return re.compile(r"\A" + regex[-1] + r"\Z")


def _random_patterns(count: int) -> list[str]:
    rng = random.Random(13)
    pieces = ["a", "b", "*", "**", ".", "**.", ".**", "{", ",", "}", "{a,b}", "-"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 7))) for _ in range(count)]


_SMALL_TAGS = ["".join(t) for n in range(0, 5) for t in itertools.product("ab.", repeat=n)] + ["a\nb", "a.\n", "-"]


def test_random_patterns_match_exactly_what_the_old_regex_matched():
    compared = 0
    for pattern in _random_patterns(1500):
        try:
            oracle = _old_compile_pattern(pattern)
        except RouteError:
            with pytest.raises(RouteError):
                compile_pattern(pattern)
            continue
        compiled = compile_pattern(pattern)
        automaton = compile_nfa([parse(pattern)])
        for tag in _SMALL_TAGS:
            expected = bool(oracle.match(tag))
            assert compiled.matches(tag) is expected, (pattern, tag)
            assert automaton.matches(tag) is expected, (pattern, tag)  # the lazy DFA
            assert automaton.run(tag)[0] is expected, (pattern, tag)  # the plain automaton
        compared += 1
    assert compared > 500  # the generator must mostly make valid patterns


def test_random_pattern_lists_match_when_any_old_regex_matched():
    valid = [p for p in _random_patterns(300) if _matches_old_or_none(p, "") is not None]
    for n in range(0, len(valid) - 3, 3):
        patterns = valid[n : n + 3]
        compiled = compile_patterns(patterns)
        for tag in _SMALL_TAGS:
            assert compiled.matches(tag) is any(_matches_old_or_none(p, tag) for p in patterns), (patterns, tag)


def _matches_old_or_none(pattern: str, tag: str) -> bool | None:
    try:
        return bool(_old_compile_pattern(pattern).match(tag))
    except RouteError:
        return None


@pytest.mark.parametrize("pattern,tag,expected", ROWS, ids=ROW_IDS)
def test_automaton_matches_tags_as_fluentd_does(pattern, tag, expected):
    # Most table rows run on the regex fast path; the automaton must honour the same contract.
    assert compile_nfa([parse(pattern)]).matches(tag) is expected

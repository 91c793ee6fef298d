"""Tags and Fluentd <match> patterns (SPEC.md, "Tags and routes").

The pattern table is Fluentd's own: the examples from its documentation
("Config File Syntax" -> "How do the match patterns work?") and the glob cases
of fluent/fluentd test/test_match.rb (test_simple, test_wildcard,
test_recursive_wildcard, test_or, test_multi_pattern_or). Regex patterns
(`/.../`) are not part of the bus contract and are left out.
"""
from __future__ import annotations

import pytest

from bus.errors import InvalidTag, RouteError
from bus.tags import MAX_TAG_LENGTH, compile_pattern, compile_patterns, validate_tag


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
    assert bool(compile_pattern(pattern).match(tag)) is expected


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
    assert bool(compile_patterns(patterns).match(tag)) is expected


def test_several_patterns_stay_anchored_each():
    # Joining anchored patterns with '|' must not let one pattern match a prefix.
    rx = compile_patterns(["a", "b"])
    assert not rx.match("a.x")
    assert not rx.match("xb")
    assert rx.match("b")


def test_star_matches_exactly_one_part():
    rx = compile_pattern("a.*")
    assert rx.match("a.b")
    assert not rx.match("a")
    assert not rx.match("a.b.c")


def test_double_star_matches_zero_or_more_parts():
    rx = compile_pattern("a.**")
    assert rx.match("a")
    assert rx.match("a.b")
    assert rx.match("a.b.c.d.e.f")
    assert not rx.match("ab")


def test_braces_are_alternatives_that_may_hold_globs():
    rx = compile_pattern("a.{b,c.**}")
    assert rx.match("a.b")
    assert rx.match("a.c.d.e")
    assert not rx.match("a.b.c")


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

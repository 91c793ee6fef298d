"""Route files, first-match routing and endpoint templating (SPEC.md, "Tags and routes")."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bus.errors import NoRoute, RouteError
from bus.routes import (
    DEFAULT_RETRYABLE,
    MAX_RETRY_INTERVAL,
    VISIBILITY_MARGIN,
    load_routes,
    parse_endpoint,
)
from routekit import MINIMAL, VISIBILITY, broken, load, write

# --------------------------------------------------------------------------- defaults

def test_route_defaults_are_those_of_the_contract(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    route = load(tmp_path).by_name["api"]
    assert route.name == "api"
    assert route.file == str(tmp_path / "api.toml")
    assert route.match == ("api.**",)
    assert route.method == "POST"
    assert route.content_type == "application/json"
    assert route.headers == {}
    assert route.open_timeout == 2
    assert route.read_timeout == 15
    assert route.retry_max_interval == 60
    assert route.max_attempts is None
    assert route.backlog_limit is None
    assert route.endpoint.render("api.orders") == "http://svc.example/in"


def test_default_retryable_statuses_are_408_425_429_and_all_5xx(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    statuses = load(tmp_path).by_name["api"].retryable_statuses
    assert statuses == DEFAULT_RETRYABLE
    assert statuses == frozenset({408, 425, 429, *range(500, 600)})
    for never in (200, 204, 301, 302, 400, 401, 403, 404, 409, 410, 422, 499, 600):
        assert never not in statuses


def test_every_setting_is_read_from_the_file(tmp_path):
    write(
        tmp_path,
        "orders.toml",
        """
        match = ["api.orders", "api.orders.**"]
        endpoint = "https://orders.example:8443/v1/${tag[-1]}"
        method = "put"
        content_type = "application/x-ndjson"
        headers = { X-Team = "orders" }
        open_timeout = 1.5
        read_timeout = 30
        retryable_statuses = [409, "500-503"]
        retry_max_interval = 600
        max_attempts = 10
        backlog_limit = 1000
        compress = "gzip"
        proxy = "http://egress.internal:3128"
        """,
    )
    route = load(tmp_path, visibility_timeout=3600).by_name["orders"]
    assert (route.compress, route.proxy) == ("gzip", "http://egress.internal:3128")
    assert route.match == ("api.orders", "api.orders.**")
    assert route.method == "PUT"
    assert route.content_type == "application/x-ndjson"
    assert route.headers == {"X-Team": "orders"}
    assert route.open_timeout == 1.5
    assert route.read_timeout == 30
    assert route.retryable_statuses == frozenset({409, 500, 501, 502, 503})
    assert route.retry_max_interval == 600
    assert route.max_attempts == 10
    assert route.backlog_limit == 1000
    assert route.endpoint.render("api.orders.eu") == "https://orders.example:8443/v1/eu"


def test_match_may_be_a_single_string(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    assert load(tmp_path).by_name["api"].match == ("api.**",)


# --------------------------------------------------------------------------- first match

def test_first_match_wins_in_file_name_order(tmp_path):
    # Written in reverse order: file-name order decides, not creation order.
    write(tmp_path, "30-catchall.toml", 'match = "**"\nendpoint = "http://all.example/"\n')
    write(tmp_path, "20-api.toml", 'match = "api.**"\nendpoint = "http://api.example/"\n')
    write(tmp_path, "10-orders.toml", 'match = "api.orders"\nendpoint = "http://orders.example/"\n')
    router = load(tmp_path)
    assert [r.name for r in router.routes] == ["10-orders", "20-api", "30-catchall"]
    assert router.match("api.orders").name == "10-orders"
    assert router.match("api.users").name == "20-api"
    assert router.match("api").name == "20-api"
    assert router.match("web.home").name == "30-catchall"


def test_a_catch_all_first_shadows_every_later_route(tmp_path):
    write(tmp_path, "a-all.toml", 'match = "**"\nendpoint = "http://all.example/"\n')
    write(tmp_path, "b-api.toml", 'match = "api.**"\nendpoint = "http://api.example/"\n')
    router = load(tmp_path)
    assert router.match("api.orders").name == "a-all"


def test_several_patterns_per_route(tmp_path):
    write(tmp_path, "web.toml", 'match = ["web.*", "{site,app}.**"]\nendpoint = "http://web.example/"\n')
    write(tmp_path, "zz.toml", 'match = "**"\nendpoint = "http://rest.example/"\n')
    router = load(tmp_path)
    assert router.match("web.home").name == "web"
    assert router.match("site").name == "web"
    assert router.match("app.a.b").name == "web"
    assert router.match("web.home.x").name == "zz"
    assert router.match("other").name == "zz"


def test_tag_no_route_matches_raises_no_route(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    router = load(tmp_path)
    for _ in range(2):  # also when the miss is cached
        with pytest.raises(NoRoute, match="no route matches tag 'web.home'"):
            router.match("web.home")


def test_only_toml_files_are_routes(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    write(tmp_path, "README.md", "not a route")
    write(tmp_path, "api.toml.bak", "match = ")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "nested.toml", "this is not toml = = =")
    assert [r.name for r in load(tmp_path).routes] == ["api"]


def test_routes_folder_may_be_given_as_a_string(tmp_path):
    write(tmp_path, "api.toml", MINIMAL)
    assert load_routes(str(tmp_path), VISIBILITY).match("api.x").name == "api"


def test_missing_routes_folder_is_a_route_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RouteError) as exc:
        load(missing)
    assert str(missing) in str(exc.value)
    assert "not found" in str(exc.value)


def test_empty_routes_folder_is_a_route_error_naming_it(tmp_path):
    write(tmp_path, "notes.txt", "no routes here")
    with pytest.raises(RouteError) as exc:
        load(tmp_path)
    assert str(tmp_path) in str(exc.value)
    assert "no *.toml" in str(exc.value)


# --------------------------------------------------------------------------- broken files
# Every case: RouteError naming the broken file and the key at fault.

BROKEN = [
    ("unknown-key", MINIMAL + 'retries = 3\n', "'retries'"),
    ("misspelled-key", MINIMAL + 'read_timout = 3\n', "'read_timout'"),
    ("missing-match", 'endpoint = "http://svc.example/"\n', "'match'"),
    ("missing-endpoint", 'match = "api.**"\n', "'endpoint'"),
    ("match-empty-list", 'match = []\nendpoint = "http://svc.example/"\n', "'match'"),
    ("match-number", 'match = 5\nendpoint = "http://svc.example/"\n', "'match'"),
    ("match-list-of-numbers", 'match = [1, 2]\nendpoint = "http://svc.example/"\n', "'match'"),
    ("match-unclosed-brace", 'match = "api.{a,b"\nendpoint = "http://svc.example/"\n', "'match'"),
    ("match-regex", 'match = "/api\\\\..*/"\nendpoint = "http://svc.example/"\n', "'match'"),
    ("match-space-separated", 'match = "api.a api.b"\nendpoint = "http://svc.example/"\n', "'match'"),
    ("endpoint-number", 'match = "a"\nendpoint = 8080\n', "'endpoint'"),
    ("endpoint-ftp", 'match = "a"\nendpoint = "ftp://svc.example/in"\n', "'endpoint'"),
    ("endpoint-no-scheme", 'match = "a"\nendpoint = "svc.example/in"\n', "'endpoint'"),
    ("endpoint-no-host", 'match = "a"\nendpoint = "http:///in"\n', "'endpoint'"),
    ("endpoint-bad-port", 'match = "a"\nendpoint = "http://svc.example:99999/"\n', "'endpoint'"),
    ("endpoint-userinfo", 'match = "a"\nendpoint = "http://u:p@svc.example/"\n', "'endpoint'"),
    ("placeholder-in-scheme", 'match = "a"\nendpoint = "${tag}://svc.example/"\n', "'endpoint'"),
    ("placeholder-in-port", 'match = "a"\nendpoint = "http://svc.example:${tag}/"\n', "'endpoint'"),
    ("placeholder-after-port", 'match = "a"\nendpoint = "http://svc.example:80${tag[0]}/"\n', "'endpoint'"),
    ("placeholder-in-host", 'match = "a"\nendpoint = "http://${tag[0]}.svc.example/"\n', "'endpoint'"),
    ("placeholder-is-host", 'match = "a"\nendpoint = "http://${tag}/in"\n', "'endpoint'"),
    ("placeholder-after-host", 'match = "a"\nendpoint = "http://svc.example${tag}"\n', "'endpoint'"),
    ("placeholder-in-userinfo", 'match = "a"\nendpoint = "http://${tag}@svc.example/"\n', "'endpoint'"),
    ("unknown-placeholder", 'match = "a"\nendpoint = "http://svc.example/${foo}"\n', "'endpoint'"),
    ("placeholder-bad-index", 'match = "a"\nendpoint = "http://svc.example/${tag[x]}"\n', "'endpoint'"),
    ("placeholder-tags", 'match = "a"\nendpoint = "http://svc.example/${tags}"\n', "'endpoint'"),
    ("placeholder-env", 'match = "a"\nendpoint = "http://svc.example/${env:HOME}"\n', "'endpoint'"),
    ("method-get", MINIMAL + 'method = "GET"\n', "'method'"),
    ("compress-zstd", MINIMAL + 'compress = "zstd"\n', "'compress'"),
    ("compress-bool", MINIMAL + 'compress = true\n', "'compress'"),
    ("proxy-socks", MINIMAL + 'proxy = "socks5://p:1080"\n', "'proxy'"),
    ("proxy-number", MINIMAL + 'proxy = 3128\n', "'proxy'"),
    ("method-number", MINIMAL + 'method = 1\n', "'method'"),
    ("content-type-no-slash", MINIMAL + 'content_type = "json"\n', "'content_type'"),
    ("headers-string", MINIMAL + 'headers = "X-A: 1"\n', "'headers'"),
    ("headers-int-value", MINIMAL + 'headers = { X-A = 1 }\n', "'headers'"),
    ("headers-bad-name", MINIMAL + 'headers = { "X A" = "1" }\n', "'headers'"),
    ("headers-line-break", MINIMAL + 'headers = { X-A = "1\\r\\nX-Evil: 2" }\n', "'headers'"),
    ("open-timeout-negative", MINIMAL + 'open_timeout = -1\n', "'open_timeout'"),
    ("open-timeout-zero", MINIMAL + 'open_timeout = 0\n', "'open_timeout'"),
    ("open-timeout-string", MINIMAL + 'open_timeout = "2"\n', "'open_timeout'"),
    ("open-timeout-bool", MINIMAL + 'open_timeout = true\n', "'open_timeout'"),
    ("read-timeout-negative", MINIMAL + 'read_timeout = -0.5\n', "'read_timeout'"),
    ("read-timeout-too-long-for-visibility", MINIMAL + 'read_timeout = 48\n', "'read_timeout'"),
    ("statuses-empty", MINIMAL + 'retryable_statuses = []\n', "'retryable_statuses'"),
    ("statuses-not-list", MINIMAL + 'retryable_statuses = 503\n', "'retryable_statuses'"),
    ("statuses-2xx", MINIMAL + 'retryable_statuses = [200]\n', "'retryable_statuses'"),
    ("statuses-2xx-range", MINIMAL + 'retryable_statuses = ["200-599"]\n', "'retryable_statuses'"),
    ("statuses-204", MINIMAL + 'retryable_statuses = [503, 204]\n', "'retryable_statuses'"),
    ("statuses-600", MINIMAL + 'retryable_statuses = [600]\n', "'retryable_statuses'"),
    ("statuses-99", MINIMAL + 'retryable_statuses = [99]\n', "'retryable_statuses'"),
    ("statuses-reversed-range", MINIMAL + 'retryable_statuses = ["599-500"]\n', "'retryable_statuses'"),
    ("statuses-open-range", MINIMAL + 'retryable_statuses = ["5xx"]\n', "'retryable_statuses'"),
    ("statuses-bool", MINIMAL + 'retryable_statuses = [true]\n', "'retryable_statuses'"),
    ("statuses-float", MINIMAL + 'retryable_statuses = [503.0]\n', "'retryable_statuses'"),
    ("retry-max-interval-too-large", MINIMAL + f'retry_max_interval = {MAX_RETRY_INTERVAL + 1}\n',
     "'retry_max_interval'"),
    ("retry-max-interval-below-first-delay", MINIMAL + 'retry_max_interval = 0.5\n', "'retry_max_interval'"),
    ("retry-max-interval-negative", MINIMAL + 'retry_max_interval = -60\n', "'retry_max_interval'"),
    ("retry-max-interval-string", MINIMAL + 'retry_max_interval = "60s"\n', "'retry_max_interval'"),
    ("max-attempts-zero", MINIMAL + 'max_attempts = 0\n', "'max_attempts'"),
    ("max-attempts-float", MINIMAL + 'max_attempts = 2.5\n', "'max_attempts'"),
    ("max-attempts-bool", MINIMAL + 'max_attempts = true\n', "'max_attempts'"),
    ("backlog-limit-zero", MINIMAL + 'backlog_limit = 0\n', "'backlog_limit'"),
    ("backlog-limit-string", MINIMAL + 'backlog_limit = "10MB"\n', "'backlog_limit'"),
    ("tls-verify-string", MINIMAL + 'tls_verify = "yes"\n', "'tls_verify'"),
    ("batch-max-zero", MINIMAL + 'batch_max = 0\n', "'batch_max'"),
    ("batch-max-over-500", MINIMAL + 'batch_max = 501\n', "'batch_max'"),
    ("batch-max-float", MINIMAL + 'batch_max = 10.0\n', "'batch_max'"),
    ("ca-file-missing", MINIMAL + 'ca_file = "/nonexistent/ca.pem"\n', "'ca_file'"),
    ("allowed-hosts-empty", MINIMAL + 'allowed_hosts = []\n', "'allowed_hosts'"),
    ("secret-header-literal", MINIMAL + 'secret_headers = { Authorization = "Bearer hunter2" }\n',
     "'secret_headers'"),
    ("secret-header-unset-env", MINIMAL + 'secret_headers = { Authorization = "env:BUS_TEST_UNSET" }\n',
     "'secret_headers'"),
    ("signing-secret-literal", MINIMAL + 'signing_secret = "whsec_aGVsbG8="\n', "'signing_secret'"),
]


@pytest.mark.parametrize("text,key", [(t, k) for _, t, k in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_route_file_is_a_route_error_naming_the_file_and_the_key(tmp_path, text, key):
    message = broken(tmp_path, text)
    assert str(tmp_path / "broken.toml") in message
    assert key in message


def test_route_error_never_shows_a_secret_value(tmp_path):
    message = broken(tmp_path, MINIMAL + 'secret_headers = { Authorization = "Bearer hunter2" }\n')
    assert "hunter2" not in message


def test_route_error_says_what_is_wrong(tmp_path):
    assert "required" in broken(tmp_path, 'match = "a"\n')
    assert "2xx" in broken(tmp_path, MINIMAL + 'retryable_statuses = ["200-299"]\n')
    assert "${foo}" in broken(tmp_path, 'match = "a"\nendpoint = "http://svc.example/${foo}"\n')
    assert "allowed_hosts" in broken(tmp_path, 'match = "a"\nendpoint = "http://${tag[0]}.svc.example/"\n')
    assert "visibility timeout" in broken(tmp_path, MINIMAL + 'read_timeout = 48\n')


@pytest.mark.parametrize(
    "text",
    [
        'match = "api.**"\nendpoint = "http://svc.example/\n',  # unterminated string
        'match = "api.**"\nendpoint\n',
        'match = "api.**"\nmatch = "web.**"\nendpoint = "http://svc.example/"\n',  # duplicate key
        "[[[",
    ],
    ids=["unterminated-string", "key-without-value", "duplicate-key", "garbage"],
)
def test_bad_toml_is_a_route_error_naming_the_file_and_the_line(tmp_path, text):
    message = broken(tmp_path, text)
    assert str(tmp_path / "broken.toml") in message
    assert "TOML" in message
    assert "line" in message


def test_non_utf8_route_file_is_a_route_error_naming_the_file(tmp_path):
    write(tmp_path, "aaa-good.toml", MINIMAL)
    (tmp_path / "latin1.toml").write_bytes(b'match = "caf\xe9"\nendpoint = "http://svc.example/"\n')
    with pytest.raises(RouteError) as exc:
        load(tmp_path)
    assert str(tmp_path / "latin1.toml") in str(exc.value)


@pytest.mark.parametrize("name", ["my route.toml", "a.b.toml", "caf\u00e9.toml", "a+b.toml", ".toml"],
                         ids=repr)
def test_route_file_name_must_make_a_queue_name(tmp_path, name):
    message = broken(tmp_path, MINIMAL, name=name)
    assert str(tmp_path / name) in message
    assert "file name" in message


def test_timeouts_must_fit_in_the_visibility_timeout_with_margin(tmp_path):
    # 2 + 15 + margin must stay under the visibility timeout.
    longest = 2 + 15 + VISIBILITY_MARGIN
    write(tmp_path, "api.toml", MINIMAL)
    assert load(tmp_path, visibility_timeout=longest + 1).by_name["api"]
    with pytest.raises(RouteError) as exc:
        load(tmp_path, visibility_timeout=longest)
    assert "api.toml" in str(exc.value)
    assert "'read_timeout'" in str(exc.value)


def test_retry_max_interval_is_not_bound_by_the_visibility_timeout(tmp_path):
    # Retries wait in the journal's schedule, not as unacked ETA tasks
    # (kombu#337), so a day between attempts is fine with a 60 s visibility timeout.
    write(tmp_path, "api.toml", MINIMAL + f"retry_max_interval = {MAX_RETRY_INTERVAL}\n")
    assert load(tmp_path, visibility_timeout=VISIBILITY).by_name["api"].retry_max_interval == MAX_RETRY_INTERVAL


def test_first_broken_file_stops_loading_even_after_good_ones(tmp_path):
    write(tmp_path, "a.toml", MINIMAL)
    write(tmp_path, "b.toml", 'match = "x"\n')
    write(tmp_path, "c.toml", MINIMAL)
    with pytest.raises(RouteError, match="b.toml"):
        load(tmp_path)


def test_secrets_resolve_from_the_environment(tmp_path):
    write(tmp_path, "api.toml", MINIMAL + 'secret_headers = { Authorization = "env:BUS_TEST_TOKEN" }\n')
    route = load(tmp_path, environ={"BUS_TEST_TOKEN": "Bearer s3cret"}).by_name["api"]
    assert route.secret_headers == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(route)


# --------------------------------------------------------------------------- templating

def render(template: str, tag: str) -> str:
    return parse_endpoint(template).render(tag)


@pytest.mark.parametrize(
    "template,tag,url",
    [
        ("http://h.example/in", "a.b.c", "http://h.example/in"),
        ("http://h.example/${tag}", "a.b.c", "http://h.example/a.b.c"),
        ("http://h.example/${tag[0]}", "a.b.c", "http://h.example/a"),
        ("http://h.example/${tag[1]}", "a.b.c", "http://h.example/b"),
        ("http://h.example/${tag[2]}", "a.b.c", "http://h.example/c"),
        ("http://h.example/${tag[-1]}", "a.b.c", "http://h.example/c"),
        ("http://h.example/${tag[-2]}", "a.b.c", "http://h.example/b"),
        ("http://h.example/${tag[-3]}", "a.b.c", "http://h.example/a"),
        ("http://h.example/${tag[0]}", "single", "http://h.example/single"),
        ("http://h.example/${tag[-1]}", "single", "http://h.example/single"),
        ("http://h.example/${ tag[1] }", "a.b", "http://h.example/b"),
        ("http://h.example/${tag[0]}/${tag[1]}/x", "api.orders", "http://h.example/api/orders/x"),
        ("http://h.example/${tag[0]}${tag[1]}", "api.orders", "http://h.example/apiorders"),
        ("http://h.example/in?topic=${tag}", "api.orders", "http://h.example/in?topic=api.orders"),
        ("http://h.example/in?a=${tag[0]}&b=${tag[-1]}", "x.y.z", "http://h.example/in?a=x&b=z"),
        ("http://h.example?t=${tag}", "a.b", "http://h.example?t=a.b"),
        ("http://h.example/in#${tag[-1]}", "a.b", "http://h.example/in#b"),
        ("https://h.example:8443/${tag}", "a-b.c_d", "https://h.example:8443/a-b.c_d"),
        ("http://127.0.0.1:9000/${tag}", "a", "http://127.0.0.1:9000/a"),
        ("http://[::1]:9000/${tag}", "a", "http://[::1]:9000/a"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_endpoint_renders_tag_placeholders(template, tag, url):
    assert render(template, tag) == url


@pytest.mark.parametrize(
    "template,tag,index",
    [
        ("http://h.example/${tag[1]}", "single", "[1]"),
        ("http://h.example/${tag[3]}", "a.b.c", "[3]"),
        ("http://h.example/${tag[-2]}", "single", "[-2]"),
        ("http://h.example/${tag[-4]}", "a.b.c", "[-4]"),
        ("http://h.example/in?x=${tag[5]}", "a.b", "[5]"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_missing_tag_part_raises_no_route_naming_the_part(template, tag, index):
    with pytest.raises(NoRoute) as exc:
        render(template, tag)
    message = str(exc.value)
    assert index in message
    assert repr(tag) in message
    assert template in message


def test_route_renders_through_the_router(tmp_path):
    write(tmp_path, "api.toml", 'match = "api.*.*"\nendpoint = "http://svc.example/${tag[1]}/${tag[-1]}"\n')
    router = load(tmp_path)
    assert router.match("api.orders.created").endpoint.render("api.orders.created") == (
        "http://svc.example/orders/created"
    )


EVIL_TAGS = [
    "a/b",
    "..",
    ".",
    "../../admin",
    "x?y#z",
    "@evil.com",
    "user@evil.com",
    "evil.com:6379",
    ":6379",
    "//evil.com",
    "http://evil.com/",
    "a b",
    "a\r\nHost: evil.com",
    "a\\b",
    "%2F%40",
    "a&admin=1",
    "a=b;c",
    "[::1]",
    "ä.漢字",
    "\x00",
]

TEMPLATES = [
    "http://h.example/${tag}",
    "http://h.example/in/${tag[0]}",
    "http://h.example/in/${tag[-1]}",
    "https://h.example:8443/${tag}/x",
    "http://h.example/in?t=${tag}",
    "http://h.example?t=${tag}",
    "http://h.example/in?a=1&t=${tag}&b=2",
    "http://h.example/in#${tag}",
    "http://10.0.0.1:8080/${tag}${tag}",
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("tag", EVIL_TAGS, ids=repr)
def test_tag_values_never_change_scheme_host_or_port(template, tag):
    expected = urlsplit(template.replace("${tag}", "").replace("${tag[0]}", "").replace("${tag[-1]}", ""))
    url = render(template, tag)
    got = urlsplit(url)
    assert (got.scheme, got.hostname, got.port) == (expected.scheme, expected.hostname, expected.port)
    assert got.netloc == expected.netloc
    assert got.username is None and got.password is None
    # Nothing outside the URL's safe set reaches it: every special character is percent-encoded.
    assert not set(url) & set(" \r\n\x00\\@ä")


@pytest.mark.parametrize("tag", EVIL_TAGS, ids=repr)
def test_tag_values_stay_inside_their_own_path_segment(tag):
    url = render("http://h.example/in/${tag}/out", tag)
    path = urlsplit(url).path
    assert path.startswith("/in/") and path.endswith("/out")
    assert path.count("/") == 3
    assert urlsplit(url).query == "" and urlsplit(url).fragment == ""


@pytest.mark.parametrize("tag", EVIL_TAGS, ids=repr)
def test_tag_values_cannot_add_query_parameters(tag):
    url = render("http://h.example/in?a=1&t=${tag}&b=2", tag)
    params = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert set(params) == {"a", "t", "b"}
    assert params["t"] == [tag]  # the value round-trips intact
    assert params["a"] == ["1"] and params["b"] == ["2"]


@pytest.mark.parametrize(
    "tag,encoded",
    [
        ("a/b", "a%2Fb"),
        ("x?y#z", "x%3Fy%23z"),
        ("@evil.com", "%40evil.com"),
        ("a b", "a%20b"),
        ("%2F", "%252F"),
        ("a&b=c", "a%26b%3Dc"),
        ("a:1", "a%3A1"),
        ("ä", "%C3%A4"),
    ],
    ids=repr,
)
def test_tag_values_are_percent_encoded(tag, encoded):
    assert render("http://h.example/${tag}", tag) == f"http://h.example/{encoded}"
    assert render("http://h.example/in?t=${tag}", tag) == f"http://h.example/in?t={encoded}"


def test_tag_parts_are_percent_encoded_individually():
    # A crafted tag split on '.' still cannot smuggle '/' or '@' into the URL.
    url = render("http://h.example/${tag[0]}/${tag[-1]}", "a/b.@evil")
    assert url == "http://h.example/a%2Fb/%40evil"


def test_placeholder_in_host_needs_allowed_hosts_and_renders_only_to_them(tmp_path):
    write(
        tmp_path,
        "svc.toml",
        """
        match = "svc.*"
        endpoint = "http://${tag[1]}.svc.internal/in"
        allowed_hosts = ["*.svc.internal"]
        """,
    )
    endpoint = load(tmp_path).by_name["svc"].endpoint
    assert endpoint.render("svc.orders") == "http://orders.svc.internal/in"
    assert urlsplit(endpoint.render("svc.orders")).hostname == "orders.svc.internal"


def test_host_outside_allowed_hosts_is_no_route(tmp_path):
    write(
        tmp_path,
        "svc.toml",
        """
        match = "**"
        endpoint = "http://${tag}/in"
        allowed_hosts = ["api.example.com"]
        """,
    )
    endpoint = load(tmp_path).by_name["svc"].endpoint
    assert endpoint.render("api.example.com") == "http://api.example.com/in"
    with pytest.raises(NoRoute, match="allowed_hosts"):
        endpoint.render("evil.com")
    with pytest.raises(NoRoute, match="allowed_hosts"):
        endpoint.render("api.example.com.evil.com")


def test_placeholders_only_in_path_query_or_fragment_keep_the_netloc_fixed():
    for template in TEMPLATES:
        assert parse_endpoint(template).host_templated is False


@pytest.mark.parametrize(
    "template",
    [
        "http://${tag}/",
        "http://${tag[0]}.svc.example/",
        "http://svc${tag}.example/",
        "http://svc.example${tag}",
    ],
)
def test_placeholder_touching_the_host_is_flagged_as_host_templated(template):
    assert parse_endpoint(template).host_templated is True


def test_accepting_refuses_a_tag_its_route_cannot_render_every_time_and_remembers_the_good_ones(tmp_path):
    write(tmp_path, "api.toml", 'match = "api.**"\nendpoint = "http://svc.example/${tag[2]}"\n')
    router = load(tmp_path)
    for _ in range(2):  # a refusal is not remembered as a success
        with pytest.raises(NoRoute, match=r"has no part \[2\]"):
            router.accepting("api.orders")
    assert router.accepting("api.orders.eu").name == "api"
    assert router.accepting("api.orders.eu").name == "api"
    with pytest.raises(NoRoute, match="no route matches"):
        router.accepting("other.x")

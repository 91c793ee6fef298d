"""Reading Fluentd configs and `bus routes import`: the seed config becomes a route that behaves the same."""
from __future__ import annotations

import base64
import tomllib
from pathlib import Path

import pytest

from bus import cli
from bus.errors import ConfigError
from bus.fluentd.config import parse
from bus.fluentd.routes import convert
from bus.routes import DEFAULT_RETRYABLE, load_routes, parse_route

# A copy of the seed configuration (shared/seed-fluentd.conf) that `bus` replaces.
SEED_TEXT = (Path(__file__).parent / "data" / "seed-fluentd.conf").read_text()
VISIBILITY = 110


def import_routes(text: str, tmp_path: Path, source: str = "fluentd.conf"):
    result = convert(parse(text, source), VISIBILITY, source)
    for route in result.routes:
        (tmp_path / f"{route.name}.toml").write_text(route.text)
    return result, (load_routes(tmp_path, VISIBILITY) if result.routes else None)


def test_parser_reads_nested_sections_quotes_comments_and_multiline_json():
    root = parse('''
# a comment
<match a.** b.*>   # trailing comment
  @type http
  endpoint "http://h/x?\\"q\\"=1#frag"   # comment after a quoted value
  single 'it\\'s'
  bare value with spaces # comment
  glued a#b
  headers {
    "X-One": "1",
    "X-Two": "2"
  }
  <buffer tag, time>
    retry_max_times 3
  </buffer>
</match>
''')
    (match,) = root.sections
    assert (match.name, match.arg) == ("match", "a.** b.*")
    assert match.params["endpoint"][0] == 'http://h/x?"q"=1#frag'
    assert match.params["single"][0] == "it's"
    assert match.params["bare"][0] == "value with spaces"
    assert match.params["glued"][0] == "a#b"
    assert match.params["headers"][0] == '{"X-One": "1", "X-Two": "2"}'
    assert match.sub("buffer").arg == "tag, time" and match.sub("buffer").params["retry_max_times"][0] == "3"


@pytest.mark.parametrize("text, says", [
    ("<match a>\n  @type http\n", "fluentd.conf:1: <match> is never closed"),
    ("<match a>\n</buffer>\n", "fluentd.conf:2: unexpected </buffer>; expected </match>"),
    ('<match a>\n  endpoint "http://x\n</match>\n', "fluentd.conf:2: a double-quoted value is not closed"),
    ("<match a>\n  headers {\"a\": \n</match>\n", "a JSON value that never ends"),
    ("<match a\n", "cannot read the section tag"),
    ("<match a>\n  >oops\n</match>\n", "fluentd.conf:2: cannot read '>oops' as a parameter"),
])
def test_parser_errors_name_the_line(text, says):
    with pytest.raises(ConfigError, match=says):
        parse(text)


def test_seed_config_converts_to_a_route_that_behaves_the_same(tmp_path):
    result, router = import_routes(SEED_TEXT, tmp_path, "seed-fluentd.conf")
    assert result.failed == 0
    assert [r.name for r in result.routes] == ["01-api"]
    route = router.match("api.orders")
    assert route.match == ("api.*",)
    assert route.endpoint.render("api.orders") == "http://http:8000/api/orders/"
    assert (route.method, route.content_type) == ("POST", "application/json")
    assert route.open_timeout == 2 and route.read_timeout == 15  # read_timeout unset: bus's default, reported
    assert route.retry_max_interval == 60 and route.max_attempts is None  # retry_forever
    assert route.retryable_statuses == DEFAULT_RETRYABLE
    notes = "\n".join(result.notes)
    assert "total_limit_size 10GB: not carried" in notes and "backlog_limit" in notes
    assert "read_timeout: not set" in notes and "retryable_response_codes: not set" in notes
    assert "@log_level: not carried" in notes
    assert "bus serve --forward 0.0.0.0:24224" in notes
    with pytest.raises(Exception, match="no route matches"):
        router.match("other.tag")


def test_bus_routes_import_writes_the_seed_route_and_bus_routes_shows_its_url(tmp_path, monkeypatch, capsys):
    config = tmp_path / "fluentd.conf"
    config.write_text(SEED_TEXT)
    out = tmp_path / "routes"
    monkeypatch.setenv("BUS_ROUTES", str(out))
    assert cli.main(["routes", "import", str(config), "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out and not out.exists()
    assert cli.main(["routes", "import", str(config)]) == 0
    assert f"wrote {out / '01-api.toml'}" in capsys.readouterr().out
    assert cli.main(["routes", "api.orders"]) == 0
    assert "POST http://http:8000/api/orders/" in capsys.readouterr().out
    # Importing again would overwrite: refused, nothing written.
    assert cli.main(["routes", "import", str(config)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["routes", "import"]) == 2


SEVERAL = """
@include other.conf
<system>
  workers 2
</system>
<filter api.**>
  @type record_transformer
</filter>
<match fluent.**>
  @type null
</match>
<match api.{orders,users} api.v2.*>
  @type http
  @id api_v2
  endpoint https://svc.example/api/${tag[-1]}
  http_method put
  headers {"X-Source": "fluentd"}
  open_timeout 3s
  read_timeout 30
  retryable_response_codes 503, 429
  proxy http://proxy:3128
  keepalive true
  <auth>
    method basic
    username user
    password pass
  </auth>
  <buffer>
    retry_max_times 5
    retry_max_interval 30s
    retry_wait 2s
    total_limit_size 1g
    chunk_limit_size 8m
    delayed_commit_timeout 60
  </buffer>
</match>
<match logs.**>
  @type http
  endpoint http://logs:9000/ingest/${tag}/%Y
</match>
<match slow.**>
  @type http
  endpoint http://slow/
  <buffer>
    retry_max_interval 2d
  </buffer>
</match>
<label @ARCHIVE>
  <match **>
    @type http
    endpoint http://archive/
  </match>
</label>
<match **>
  @type http
  endpoint "http://catchall:8000/${tag}"
  headers X-A:1, X-B:2
  json_array true
  <format>
    @type msgpack
  </format>
</match>
"""


def catchall_proxy_unset(router) -> bool:
    """A match without `proxy` leaves the route to HTTP(S)_PROXY, as out_http's default ($HTTP_PROXY) does."""
    return router.match("anything.else").proxy is None


def test_several_matches_keep_their_order_and_everything_not_carried_is_reported(tmp_path):
    result, router = import_routes(SEVERAL, tmp_path)
    names = [r.name for r in result.routes]
    assert names == ["02-api_v2", "05-all"] and names == sorted(names)  # numbered by position among all <match>
    api = router.by_name["02-api_v2"]
    assert api.match == ("api.{orders,users}", "api.v2.*")
    assert api.endpoint.render("api.v2.items") == "https://svc.example/api/items"
    assert (api.method, api.open_timeout, api.read_timeout) == ("PUT", 3, 30)
    assert api.retryable_statuses == frozenset({503, 429})
    assert api.max_attempts == 6 and api.retry_max_interval == 30
    assert api.headers == {"X-Source": "fluentd", "Authorization": "Basic " + base64.b64encode(b"user:pass").decode()}
    assert api.content_type == "application/x-ndjson"  # out_http's default for its json format
    assert api.proxy == "http://proxy:3128" and catchall_proxy_unset(router)
    catchall = router.match("anything.else")
    assert catchall.name == "05-all" and catchall.headers == {"X-A": "1", "X-B": "2"}
    assert (catchall.batch_max, catchall.content_type) == (100, "application/json")
    assert router.match("api.orders").name == "02-api_v2"  # first match wins, as in Fluentd
    notes = "\n".join(result.notes)
    for expected in [
        "@include is not supported",
        "<system> (fluentd.conf:3): not carried",
        "<filter api.**> (fluentd.conf:6): not carried",
        "<match fluent.**> (fluentd.conf:9): NOT converted: @type null is not http",
        "proxy: carried as the route's proxy",
        "keepalive: not carried",
        "retry_max_times 5: kept as max_attempts = 6",
        "retry_wait 2s: not carried",
        "total_limit_size 1g: not carried",
        "chunk_limit_size 8m: not needed",
        "delayed_commit_timeout 60: not carried",
        "<match logs.**> (fluentd.conf:37): NOT converted: endpoint uses %Y",
        "<match slow.**> (fluentd.conf:41): NOT converted: 04-slow.toml: key 'retry_max_interval'",
        "<label @ARCHIVE> (fluentd.conf:48): not carried (1 <match> inside)",
        "json_array true: kept as batch_max = 100",
        "<format> @type msgpack: not carried",
    ]:
        assert expected in notes, expected
    assert result.failed == 3  # null, logs, slow


COPY = """
<match api.*>
  @type copy
  <store>
    @type http
    endpoint http://orders:8000/api/${tag[1]}/
  </store>
  <store>
    @type http
    endpoint http://audit:8000/in
  </store>
</match>
<match logs.**>
  @type copy
  <store>
    @type file
    path /var/log/fluent/logs
  </store>
</match>
<match billing.*>
  @type http
  endpoint http://billing:8000/in
</match>
"""


def test_a_copy_of_http_stores_becomes_one_route_with_a_destination_per_store_and_a_copy_of_a_file_store_does_not():
    result = convert(parse(COPY), VISIBILITY)
    assert [r.name for r in result.routes] == ["01-api", "03-billing"]
    assert result.failed == 1, "the copy with a file store"
    route = parse_route("01-api", "01-api.toml", tomllib.loads(result.routes[0].text), VISIBILITY)
    assert route.match == ("api.*",) and [d.destination for d in route.destinations] == ["store1", "store2"]
    assert route.destinations[0].endpoint.template == "http://orders:8000/api/${tag[1]}/"
    assert route.destinations[1].endpoint.template == "http://audit:8000/in"
    notes = "\n".join(result.notes)
    assert ("<match api.*> (fluentd.conf:2): @type copy of 2 http stores: converted to destinations store1, store2"
            in notes)
    assert "<match api.*> (fluentd.conf:2): <store> store2: read_timeout: not set" in notes, "each store's own report"
    assert ("<match logs.**> (fluentd.conf:13): NOT converted: @type copy (<store> @type file): only a copy whose "
            "stores are all @type http becomes a route with destinations") in notes


def test_a_store_s_id_names_its_destination_and_its_own_settings_stay_its_own():
    result = convert(parse("""
<match shop.*>
  @type copy
  <store>
    @id orders
    @type http
    endpoint http://orders:8000/in
    retryable_response_codes 503
  </store>
  <store>
    @id audit
    @type http
    endpoint http://audit:8000/in
    http_method put
    <buffer>
      retry_max_times 2
    </buffer>
  </store>
</match>
"""), VISIBILITY)
    route = parse_route("01-shop", "01-shop.toml", tomllib.loads(result.routes[0].text), VISIBILITY)
    orders, audit = route.destinations
    assert (orders.destination, orders.method, orders.retryable_statuses, orders.max_attempts) == \
        ("orders", "POST", frozenset({503}), None)
    assert (audit.destination, audit.method, audit.max_attempts) == ("audit", "PUT", 3)


def test_a_copy_whose_store_cannot_be_converted_is_not_converted_naming_the_match():
    result = convert(parse("<match a.*>\n  @type copy\n  <store>\n    @type http\n  </store>\n</match>\n"),
                     VISIBILITY)
    assert result.routes == [] and result.failed == 1
    assert "<match a.*> (fluentd.conf:1): NOT converted: it has no endpoint" in result.notes


def test_bus_routes_import_of_a_copy_of_a_file_store_exits_1_naming_the_match_and_writes_what_it_converted(
        tmp_path, monkeypatch, capsys):
    config = tmp_path / "fluentd.conf"
    config.write_text(COPY)
    out = tmp_path / "routes"
    monkeypatch.setenv("BUS_ROUTES", str(out))
    assert cli.main(["routes", "import", str(config)]) == 1
    captured = capsys.readouterr()
    assert "<match logs.**> (fluentd.conf:13): NOT converted: @type copy (<store> @type file)" in captured.out
    assert "1 <match> block(s) could not be converted" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["01-api.toml", "03-billing.toml"]


def test_unsupported_placeholders_and_embedded_ruby_are_not_converted():
    text = """
<match a.*>
  @type http
  endpoint http://h/${key1}
</match>
<match b.*>
  @type http
  endpoint "http://#{ENV['HOST']}/"
</match>
<match c.*>
  @type http
</match>
"""
    result = convert(parse(text), VISIBILITY)
    assert result.failed == 3 and not result.routes
    notes = "\n".join(result.notes)
    assert "${key1}" in notes and "embeds Ruby code" in notes and "has no endpoint" in notes


def test_route_file_text_round_trips_awkward_strings(tmp_path):
    text = r'''
<match a.*>
  @type http
  endpoint "http://h/p?q=\"x\"&r=\\y&s=ü"
  headers {"X-Quote": "say \"hi\"", "X-Tab": "a\tb"}
</match>
'''
    result, router = import_routes(text, tmp_path)
    route = router.match("a.b")
    assert route.endpoint.template == 'http://h/p?q="x"&r=\\y&s=ü'
    assert tomllib.loads(result.routes[0].text)["endpoint"] == route.endpoint.template
    assert route.headers == {"X-Quote": 'say "hi"', "X-Tab": "a\tb"}


def test_tls_settings_become_the_route_tls_keys(tmp_path):
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("not read by the converter or the loader")
    routes = tmp_path / "routes"
    routes.mkdir()
    text = f"""
<match secure.*>
  @type http
  endpoint https://svc.example/in
  tls_ca_cert_path {tmp_path / "ca.pem"}
  tls_client_cert_path {tmp_path / "client.pem"}
  tls_private_key_path {tmp_path / "client.key"}
  tls_private_key_passphrase secret
</match>
<match lab.*>
  @type http
  endpoint https://lab.example/in
  tls_verify_mode none
</match>
"""
    result, router = import_routes(text, routes)
    secure, lab = (router.by_name[r.name] for r in result.routes)
    assert (secure.ca_file, secure.client_cert, secure.client_key, secure.tls_verify) == (
        str(tmp_path / "ca.pem"), str(tmp_path / "client.pem"), str(tmp_path / "client.key"), True)
    assert lab.tls_verify is False
    notes = "\n".join(result.notes)
    assert "tls_private_key_passphrase: not carried: bus reads unencrypted client keys only" in notes
    assert "tls_verify_mode none: carried as tls_verify = false" in notes


def test_compress_gzip_and_proxy_are_carried_and_an_unknown_compress_is_not_converted(tmp_path):
    result, router = import_routes("""
<match a.*>
  @type http
  endpoint http://a/
  compress gzip
  proxy http://user:pw@proxy.internal:3128
</match>
<match b.*>
  @type http
  endpoint http://b/
  compress text
</match>
<match c.*>
  @type http
  endpoint http://c/
  compress zstd
</match>
""", tmp_path)
    assert (router.match("a.x").compress, router.match("a.x").proxy) == ("gzip", "http://user:pw@proxy.internal:3128")
    assert (router.match("b.x").compress, router.match("b.x").proxy) == (None, None)
    notes = "\n".join(result.notes)
    assert 'compress gzip: carried as compress = "gzip"' in notes
    assert "proxy: carried as the route's proxy (it holds a password: keep the route file private)" in notes
    assert "<match c.*> (fluentd.conf:13): NOT converted: compress 'zstd': out_http knows text and gzip only" in notes


def test_an_in_unix_source_is_reported_as_bus_serve_forward_on_its_socket_file(tmp_path):
    result, _ = import_routes("""
<source>
  @type unix
  path /run/fluent/app.sock
</source>
<source>
  @type unix
</source>
<match a.*>
  @type http
  endpoint http://a/
</match>
""", tmp_path)
    notes = "\n".join(result.notes)
    assert "<source> (fluentd.conf:2): served by `bus serve --forward unix:/run/fluent/app.sock`" in notes
    assert "<source> (fluentd.conf:6): served by `bus serve --forward unix:/var/run/fluent/fluent.sock`" in notes

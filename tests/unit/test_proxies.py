"""Which proxy a delivery uses (bus/proxies.py): HTTP(S)_PROXY and NO_PROXY as curl reads them, and the route's key."""
from __future__ import annotations

import base64

import pytest

from bus import settings
from bus.errors import ConfigError, RouteError
from bus.proxies import choose, from_environment, parse_proxy
from bus.routes import parse_route

ENV = {"HTTP_PROXY": "http://plain:3128", "HTTPS_PROXY": "http://alice:s3cr%40t@secure:8443"}


def via(env: dict[str, str], url: str, route_proxy: str | None = None) -> str | None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = choose(from_environment(env), route_proxy, parts.scheme, parts.hostname,
                   parts.port or (443 if parts.scheme == "https" else 80)).proxy
    return proxy.shown if proxy else None


def test_http_and_https_endpoints_use_their_own_variable():
    assert via(ENV, "http://api.example.com/") == "http://plain:3128"
    assert via(ENV, "https://api.example.com/") == "http://***@secure:8443"
    assert via({}, "https://api.example.com/") is None


def test_the_lowercase_variable_wins_over_the_uppercase_one_as_in_curl():
    assert via({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://UP:2"}, "https://x/") == "http://low:1"
    assert via({"http_proxy": "low:3128"}, "http://x/") == "http://low:3128"  # no scheme means http://


@pytest.mark.parametrize("no_proxy, url, straight", [
    ("*", "https://anything.example/", True),
    ("example.com", "https://example.com/", True),
    ("example.com", "https://api.example.com/", True),
    (".example.com", "https://api.example.com/", True),
    (".example.com", "https://example.com/", True),
    ("example.com", "https://notexample.com/", False),
    ("example.com", "https://example.com.evil/", False),
    ("localhost, 127.0.0.1", "http://127.0.0.1:8000/", True),
    ("10.0.0.0/8", "http://10.1.2.3/", True),
    ("10.0.0.0/8", "http://11.1.2.3/", False),
    ("::1", "http://[::1]:8000/", True),
    ("[::1]:8000", "http://[::1]:8000/", True),
    ("[::1]:8000", "http://[::1]:9000/", False),
    ("api.example.com:8443", "https://api.example.com:8443/", True),
    ("api.example.com:8443", "https://api.example.com/", False),
    ("10.0.0.0/8", "http://ten.example/", False),  # an address entry never matches a name
    ("EXAMPLE.com", "https://Api.Example.COM./", True),
])
def test_no_proxy_takes_names_with_or_without_a_leading_dot_addresses_cidr_ports_and_a_star(no_proxy, url, straight):
    for name in ("NO_PROXY", "no_proxy"):
        assert (via({**ENV, name: no_proxy}, url) is None) == straight


def test_the_routes_proxy_key_wins_and_an_empty_one_goes_straight():
    assert via(ENV, "https://x/", "http://route-proxy:3128") == "http://route-proxy:3128"
    assert via({**ENV, "NO_PROXY": "*"}, "https://x/", "http://route-proxy:3128") == "http://route-proxy:3128"
    assert via(ENV, "https://x/", "") is None


def test_proxy_credentials_become_basic_authorization_and_are_never_shown():
    proxy = parse_proxy("http://alice:s3cr%40t@secure:8443")
    assert proxy.authorization == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert "s3cr" not in proxy.shown and "s3cr" not in repr(proxy)


@pytest.mark.parametrize("url, says", [
    ("socks5://proxy:1080", "only http:// proxies are supported"),
    ("https://proxy:443", "only http:// proxies are supported"),
    ("http://proxy:99999", "invalid port"),
    ("http://u:pw@proxy:3128/path", "scheme, credentials, host and port only"),
])
def test_an_unusable_proxy_is_refused_saying_why_without_its_password(url, says):
    with pytest.raises(ValueError, match=says) as caught:
        parse_proxy(url)
    assert "pw@" not in str(caught.value)
    with pytest.raises(ConfigError, match=f"HTTPS_PROXY: .*{says}"):
        settings.load({"HTTPS_PROXY": url})
    with pytest.raises(RouteError, match=f"r.toml: key 'proxy': .*{says}"):
        parse_route("r", "r.toml", {"match": "a", "endpoint": "http://x/", "proxy": url}, 60)


def test_a_routes_proxy_is_kept_out_of_its_repr():
    route = parse_route("r", "r.toml", {"match": "a", "endpoint": "http://x/", "proxy": "http://u:pw@p:1"}, 60)
    assert route.proxy == "http://u:pw@p:1" and "pw" not in repr(route)

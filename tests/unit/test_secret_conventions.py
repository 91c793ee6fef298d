"""The two ways a secret reaches the bus (docs/security.md, "Two conventions for secrets"): settings as
NAME or NAME_FILE in the environment, route files as "env:NAME" or "file:/path" references. Each is
its platform's custom; what they share (a mounted secret file read the same way, an empty or
unreadable one refused naming it) is pinned here."""
from __future__ import annotations

import pytest

from bus import route_secrets, settings
from bus.errors import ConfigError


def from_settings(path) -> str | None:
    return settings.load({"BUS_FORWARD_SHARED_KEY_FILE": str(path)}).forward.shared_key


def from_a_route(path) -> str:
    return route_secrets.resolve(f"file:{path}", {})


def test_a_mounted_secret_file_gives_the_same_value_either_way(tmp_path):
    # Docker and Kubernetes secrets, and `echo ... > file`, end in a newline that is not part of the secret.
    (tmp_path / "key").write_text("s3cret-value\n")
    assert from_settings(tmp_path / "key") == from_a_route(tmp_path / "key") == "s3cret-value"


def test_an_empty_or_unreadable_secret_file_is_refused_either_way_naming_it(tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path, says in ((tmp_path / "empty", "empty"), (tmp_path / "missing", "cannot")):
        with pytest.raises(ConfigError, match=says) as by_settings:
            from_settings(path)
        with pytest.raises(ValueError, match=says) as by_route:
            from_a_route(path)
        assert str(path) in str(by_settings.value) and str(path) in str(by_route.value)


def test_each_refuses_what_the_other_takes_so_neither_is_mistaken_for_the_other(tmp_path):
    # A route file is shared and committed: a literal value there is refused, whatever it looks like.
    with pytest.raises(ValueError, match="never the value itself"):
        route_secrets.resolve("s3cret-value", {})
    # In the environment the value is the variable itself; a reference is taken as written, not resolved.
    assert settings.load({"BUS_FORWARD_SHARED_KEY": "env:OTHER"}).forward.shared_key == "env:OTHER"
    with pytest.raises(ConfigError, match="keep one"):
        settings.load({"BUS_FORWARD_SHARED_KEY": "a", "BUS_FORWARD_SHARED_KEY_FILE": str(tmp_path / "key")})

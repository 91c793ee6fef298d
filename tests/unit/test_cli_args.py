"""The command line's own arguments: `bus --version`, and `bus routes` telling a tag from the import subcommand."""
from __future__ import annotations

import pytest

from bus import cli


def run(capsys, monkeypatch, tmp_path, *argv: str) -> tuple[int, str, str]:
    routes = tmp_path / "routes"
    routes.mkdir(exist_ok=True)
    (routes / "all.toml").write_text('match = "**"\nendpoint = "http://127.0.0.1:9/in/${tag}"\n')
    monkeypatch.setenv("BUS_ROUTES", str(routes))
    monkeypatch.setenv("BUS_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: these commands need no Redis
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_bus_version_prints_the_installed_version(capsys, monkeypatch, tmp_path):
    code, out, _ = run(capsys, monkeypatch, tmp_path, "--version")
    assert code == 0 and out.startswith("bus 0.") and out.count("\n") == 1


def test_a_tag_named_import_is_looked_up_with_tag_option(capsys, monkeypatch, tmp_path):
    code, out, err = run(capsys, monkeypatch, tmp_path, "routes", "--tag", "import")
    assert code == 0, err
    assert out.startswith("import -> route all") and "POST http://127.0.0.1:9/in/import" in out


def test_routes_import_without_a_file_is_a_usage_error_naming_the_tag_option(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, monkeypatch, tmp_path, "routes", "import")
    assert code == 2
    assert "bus routes import FLUENTD.CONF" in err and "bus routes --tag import" in err


def test_a_tag_given_twice_is_a_usage_error(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, monkeypatch, tmp_path, "routes", "api.a", "--tag", "api.b")
    assert code == 2 and "give the tag once" in err


@pytest.mark.parametrize("tag", ["api.orders", "--tag=api.orders"])
def test_any_other_tag_is_looked_up_either_way(capsys, monkeypatch, tmp_path, tag):
    code, out, err = run(capsys, monkeypatch, tmp_path, "routes", tag)
    assert code == 0 and out.startswith("api.orders -> route all"), err

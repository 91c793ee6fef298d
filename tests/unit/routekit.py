"""Route folders for the route tests: write files, load them, and the message a broken one gets."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.errors import RouteError
from bus.routes import Router, load_routes

VISIBILITY = 60  # BUS_VISIBILITY_TIMEOUT default
MINIMAL = 'match = "api.**"\nendpoint = "http://svc.example/in"\n'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(folder: Path, visibility_timeout: int = VISIBILITY, environ=None) -> Router:
    return load_routes(folder, visibility_timeout, environ)


def broken(tmp_path: Path, text: str, name: str = "broken.toml", visibility_timeout: int = VISIBILITY) -> str:
    """Load a folder holding one good route and one broken one; return the RouteError message."""
    write(tmp_path, "aaa-good.toml", MINIMAL)
    write(tmp_path, name, text)
    with pytest.raises(RouteError) as exc:
        load(tmp_path, visibility_timeout)
    return str(exc.value)

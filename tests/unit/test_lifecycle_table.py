"""bus/lifecycle.py's table is the one account of an event's moves: its scripts exist, ship, spell no
status of their own, and docs/design.md shows the same table."""
from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from bus import lifecycle
from bus.journal import scripts

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "bus" / "journal" / "lua"
# Lua files that are no move of their own: functions two scripts share, two reads (the retry mover's
# plan of its sleep is one), the mover's taking and giving up of its lease, and the spool's unpacking of its frames
# read before accept.lua (whose move it is).
NOT_MOVES = {"claim_mover.lua", "group.lua", "lane.lua", "let_go.lua", "recheck.lua", "sleep.lua", "unframe.lua"}


def test_every_script_the_table_names_is_a_lua_file_and_every_lua_file_is_a_move_or_says_why_not():
    named = {script for move in lifecycle.MOVES for script in move.scripts}
    files = {p.name for p in LUA.glob("*.lua")}
    assert named - files == set(), "the table names scripts that do not exist"
    assert files - named == NOT_MOVES


def test_no_lua_file_spells_a_status_or_a_key_prefix_itself():
    statuses = "|".join(lifecycle.STATUSES)
    for path in LUA.glob("*.lua"):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        assert not re.search(rf"""['"]({statuses})['"]""", code), f"{path.name} types a status name"
        assert "'bus:" not in code and '"bus:' not in code, f"{path.name} types a key name (keys.py owns them)"


def test_each_script_is_loaded_with_the_status_names_it_uses_and_only_its_own_rows_of_the_table():
    source = scripts.load("park.lua")
    assert "local RETRYING = 'retrying'" in source and "local DEAD =" not in source
    assert re.search(r"local MOVES = '(.*)'", source).group(1).split() == ["queued>retrying", "retrying>retrying"]
    assert lifecycle.pairs("park.lua") == {(lifecycle.QUEUED, lifecycle.RETRYING),
                                           (lifecycle.RETRYING, lifecycle.RETRYING)}


def test_no_move_leaves_a_delivered_or_dead_event_except_a_replay_a_purge_or_the_archive():
    leaving = {move.name for move in lifecycle.MOVES
               if set(move.sources) & {lifecycle.DELIVERED, lifecycle.DEAD}}
    assert leaving == {"requeue", "purge", "forget_archived", "expire"}
    assert not lifecycle.allowed(lifecycle.DELIVERED, lifecycle.RETRYING)
    assert lifecycle.allowed(lifecycle.RETRYING, lifecycle.SAME)


def test_every_status_is_entered_and_left_by_some_move():
    sources = {s for move in lifecycle.MOVES for s in move.sources}
    targets = {t for move in lifecycle.MOVES for t in move.targets}
    for status in lifecycle.STATUSES:
        assert status in sources and status in targets, status


def test_the_lua_files_ship_in_the_package():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bus"]
    for path in LUA.glob("*.lua"):
        inside = path.relative_to(ROOT / "bus").as_posix()
        assert any(fnmatch.fnmatch(inside, glob) for glob in globs), f"{inside} is not package data"


def test_docs_design_shows_the_table_as_the_module_has_it():
    assert lifecycle.table_markdown() in (ROOT / "docs" / "design.md").read_text(), \
        "docs/design.md's lifecycle table differs from bus/lifecycle.py: paste lifecycle.table_markdown() there"


def test_every_script_that_schedules_for_a_time_of_its_own_wakes_the_sleeping_retry_mover():
    from bus.journal import breakers

    for name in lifecycle.WAKES_MOVER:
        code = breakers._FAIL_CODE if name == "breaker_fail" else (LUA / name).read_text()
        assert "wake_mover(" in code, f"{name} schedules without waking the mover"
    # A Lua file that adds to a retry schedule (KEYS, or the key lane.lua builds) is one of them, or the mover's own.
    movers_own = {"release.lua", "send_probe.lua"}
    for path in LUA.glob("*.lua"):
        adds = re.search(r"ZADD', (KEYS\[\d+\]|retry_schedule)|ZUNIONSTORE", path.read_text())
        if adds and path.name not in movers_own and not path.name.startswith(("accept", "capture", "requeue")):
            assert path.name in lifecycle.WAKES_MOVER, path.name
    assert "wake_mover" in scripts.load("park.lua")

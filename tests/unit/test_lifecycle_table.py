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
BROKER_LUA = ROOT / "bus" / "broker" / "lua"
# Lua files that are no move of their own: functions two scripts share, reads (the retry mover's plan of
# its sleep is one, and the archive mover's), the spool's unpacking of its frames read before accept.lua (whose move it is), and
# scripts on records that are not an event's status (a breaker, a copy's attempt, the recovery's lock and
# its last run, the retry mover's lease).
NOT_MOVES = {"fill.lua", "group.lua", "lane.lua", "recheck.lua", "unframe.lua", "read_due.lua", "breaker_fail.lua",
             "breaker_look.lua", "record_copy.lua", "recovery_done.lua", "recovery_unlock.lua", "sleep.lua",
             "claim_mover.lua", "let_go.lua", "archive_sleep.lua"}


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


def test_no_module_keeps_lua_in_a_python_string():
    # Scripts live in .lua files that name their KEYS and ARGV (journal/scripts.py loads them). The one
    # exception is scripts.py itself: its prelude is Lua made from Python's names (statuses, key layout,
    # the table's rows) and the checks the moves share, put before each script at load.
    offenders = [path.relative_to(ROOT).as_posix() for path in (ROOT / "bus").rglob("*.py")
                 if path.name != "scripts.py" and re.search(r"redis\.(p?call|error_reply)\(", path.read_text())]
    assert offenders == [], f"Lua in a Python string: move it to a .lua file ({offenders})"


def test_every_lua_file_names_its_keys_and_arguments_at_the_top_or_says_it_is_no_script():
    for path in [*LUA.glob("*.lua"), *BROKER_LUA.glob("*.lua")]:
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("--"):
                break
            header.append(line)
        text = "\n".join(header)
        assert header and header[0].startswith(f"-- {path.name}: "), f"{path.name} opens with its name and its job"
        assert "Not a script of its own" in text or ("KEYS" in text and "ARGV" in text), \
            f"{path.name}'s opening comment names no KEYS and ARGV"


def test_the_lua_files_ship_in_the_package():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bus"]
    for path in [*LUA.glob("*.lua"), *BROKER_LUA.glob("*.lua")]:
        inside = path.relative_to(ROOT / "bus").as_posix()
        assert any(fnmatch.fnmatch(inside, glob) for glob in globs), f"{inside} is not package data"


def test_docs_design_shows_the_table_as_the_module_has_it():
    assert lifecycle.table_markdown() in (ROOT / "docs" / "design.md").read_text(), \
        "docs/design.md's lifecycle table differs from bus/lifecycle.py: paste lifecycle.table_markdown() there"


def test_every_script_that_schedules_for_a_time_of_its_own_wakes_the_sleeping_retry_mover():
    for name in lifecycle.WAKES_MOVER:
        # A call, not a comment that names one; and the prelude defines what it calls.
        assert "wake_mover(" in re.sub(r"--[^\n]*", "", (LUA / name).read_text()), \
            f"{name} schedules without waking the mover"
        assert "local function wake_mover(" in scripts.load(name), f"{name}'s prelude lacks wake_mover"
    # A Lua file that adds to a retry schedule (KEYS, or the key lane.lua builds) is one of them, or the mover's own.
    movers_own = {"release.lua", "send_probe.lua", "breaker_look.lua"}
    for path in LUA.glob("*.lua"):
        adds = re.search(r"ZADD', (KEYS\[\d+\]|retry_schedule)|ZUNIONSTORE", path.read_text())
        if adds and path.name not in movers_own and not path.name.startswith(("accept", "capture", "requeue")):
            assert path.name in lifecycle.WAKES_MOVER, path.name

"""Hop stamps for `python -m bench.hops`: on PYTHONPATH of every process of a `bus up` tree, with BENCH_HOPS_OUT.

Each process appends "hop key unix-time" lines to a file of its own (line-buffered, so a killed
process loses nothing it stamped). Functions are wrapped right after their module is first
imported (a meta-path hook), so the bus's own import order and its kombu patches stay as they are.
Nothing is patched without BENCH_HOPS_OUT: the product never loads this file otherwise.
"""
from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

OUT = os.environ.get("BENCH_HOPS_OUT", "")
_files: dict[int, Any] = {}
_current: dict[str, str] = {}  # the task the pool process runs


def _file() -> Any:
    pid = os.getpid()
    f = _files.get(pid)
    if f is None:  # a forked pool process opens its own
        f = _files[pid] = open(os.path.join(OUT, f"hops-{pid}.txt"), "a", buffering=1)
    return f


def stamp(hop: str, key: str, at: float | None = None) -> None:
    _file().write(f"{hop} {key} {time.time() if at is None else at:.6f}\n")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _ingress(mod: Any) -> None:
    original = mod.Ingress._accept

    @functools.wraps(original)
    async def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        ids = await original(self, *args, **kwargs)
        t1 = time.time()
        for i in ids:
            stamp("ingress_in", i, t0)
            stamp("accepted", i, t1)
        return ids

    mod.Ingress._accept = accept


def _kombu_fixes(mod: Any) -> None:
    original = mod._append_and_hold

    def append(self: Any, message: Any, delivery_tag: str) -> None:
        original(self, message, delivery_tag)
        stamp("qos_appended", _text(message.headers.get("id")))

    mod._append_and_hold = append


def _kombu_virtual(mod: Any) -> None:
    original = mod.Transport._deliver

    def deliver(self: Any, message: Any, queue: str) -> Any:
        task = _text((message.get("headers") or {}).get("id"))
        stamp("brpop", task)
        try:  # which task carries which events: the later hops are stamped by task id
            for event in json.loads(message["body"])[0][0]:
                _file().write(f"task {event} {task}\n")
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        return original(self, message, queue)

    mod.Transport._deliver = deliver


def _pool(mod: Any) -> None:
    original = mod.BasePool.apply_async

    def apply_async(self: Any, target: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        stamp("to_pool", _text(args[1]) if args and len(args) > 1 else "?")  # trace_task_ret's (type, task id, ...)
        return original(self, target, args, *rest, **kwargs)

    mod.BasePool.apply_async = apply_async


def _signals(mod: Any) -> None:
    def prerun(task_id: str = "", **_: Any) -> None:
        _current["task"] = task_id
        stamp("pool_start", task_id)

    mod.task_prerun.connect(prerun, weak=False)


def _journal(mod: Any) -> None:
    original = mod.load_many

    def load_many(pipe: Any, event_ids: list[str], *args: Any, **kwargs: Any) -> Any:
        out = original(pipe, event_ids, *args, **kwargs)
        stamp("loaded", _current.get("task", "?"))
        return out

    mod.load_many = load_many


def _outbound(mod: Any) -> None:
    original = mod.open_response

    def open_response(pools: Any, route: Any, url: str, headers: dict, body: bytes, *args: Any, **kwargs: Any) -> Any:
        event = headers.get("X-Request-Id", "?")
        stamp("post", event)
        if b'"k"' in body:  # the load generator's key, which its send time and the receipt are counted by
            _file().write(f"key {event} {json.loads(body).get('k')}\n")
        resp = original(pools, route, url, headers, body, *args, **kwargs)
        stamp("answered", headers.get("X-Request-Id", "?"))
        return resp

    mod.open_response = open_response


PATCHES: dict[str, Callable[[Any], None]] = {
    "bus.ingress.asgi": _ingress, "bus.broker.kombu_fixes": _kombu_fixes, "kombu.transport.virtual.base": _kombu_virtual,
    "celery.concurrency.base": _pool, "celery.signals": _signals, "bus.journal": _journal, "bus.worker.outbound": _outbound,
}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = PATCHES.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            # Wrapped on the module's own loader object, which stays its resource reader (importlib.resources).
            loader, run = spec.loader, spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                patch(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if OUT:
    sys.meta_path.insert(0, _Finder())

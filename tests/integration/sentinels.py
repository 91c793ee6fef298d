"""A primary, a replica and three Sentinels of our own on free ports (`redis-server sentinel.conf --sentinel`),
each with AOF in a temp dir, for the failover tests."""
from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis

from conftest import free_port, wait_until

MASTER = "busprimary"

# The `ha` fixture's one route (conftest): each tag's second part is its own path on the receiver.
HA_ROUTE = """
match = "api.*"
endpoint = "{receiver}/api/${{tag[1]}}/"
retry_max_interval = 1
"""


class Node:
    """One redis-server process (a data node or a Sentinel) that can be killed, stopped and started again."""

    def __init__(self, directory: Path, args: list[str]):
        self.dir, self.args = directory, args
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start (or start again, from its AOF and on its port) with its arguments."""
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", *self.args],
                                     cwd=self.dir, start_new_session=True, stdout=subprocess.DEVNULL)
        client = self.client()
        wait_until(lambda: _answers(client), 10, what=f"redis-server on {self.port} to answer PING")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def data_node(directory: Path, replica_of: int | None = None) -> Node:
    args = ["--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--logfile", str(directory / "redis.log"), "--repl-diskless-sync", "no"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    node = Node(directory, args)
    node.args += ["--port", str(node.port)]
    return node


def sentinel_node(directory: Path, primary_port: int) -> Node:
    node = Node(directory, [])
    conf = directory / "sentinel.conf"
    # Sentinel rewrites its file as it learns the set: each needs its own, writable.
    conf.write_text(f"port {node.port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\n"
                    f"sentinel failover-timeout {MASTER} 4000\n"
                    f"sentinel parallel-syncs {MASTER} 1\n")
    node.args = [str(conf), "--sentinel"]
    return node


class RedisSet:
    """primary + replica + 3 Sentinels; `url` is the bus's sentinel:// BUS_REDIS_URL for them."""

    def __init__(self, tmp: Path):
        self.primary = data_node(tmp / "primary")
        self.primary.start()
        self.replica = data_node(tmp / "replica", self.primary.port)
        self.replica.start()
        wait_until(lambda: self.primary.client().info("replication")["connected_slaves"] == 1, 15,
                   what="the replica to connect")
        wait_until(lambda: self.replica.client().info("replication").get("master_link_status") == "up", 15,
                   what="the replica to sync")
        self.sentinels = [sentinel_node(tmp / f"sentinel{i}", self.primary.port) for i in range(3)]
        for node in self.sentinels:
            node.start()
        wait_until(lambda: all(self._sees_the_set(s) for s in self.sentinels), 20,
                   what="every Sentinel to know the replica and the other Sentinels")
        self.url = ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def _sees_the_set(self, sentinel: Node) -> bool:
        master = sentinel.client().sentinel_master(MASTER)
        return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2

    def primary_port(self) -> int:
        _, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def node_on(self, port: int) -> Node:
        return self.primary if self.primary.port == port else self.replica

    def failover(self, timeout: float = 20) -> Node:
        """SENTINEL FAILOVER, then wait until every Sentinel names the other node and it takes writes."""
        before = self.primary_port()
        self.sentinels[0].client().sentinel_failover(MASTER)
        wait_until(lambda: all(_names(s, before) for s in self.sentinels), timeout, interval=0.1,
                   what="the Sentinels to name the new primary")
        new = self.node_on(self.primary_port())
        wait_until(lambda: new.client().info("replication")["role"] == "master", timeout, what="the new primary")
        return new

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            node.stop()


def template_keys(node: Node) -> set[bytes]:
    return set(node.client().scan_iter(match="bus:template:*", count=1000))


def forget_templates_on_replica(replica: Node) -> None:
    """Delete the replica's template keys, as if their SETs never reached it (a replica takes no writes: for
    this DEL only; keys it holds are its own until the next full sync, which promotion never brings)."""
    client = replica.client()
    client.config_set("replica-read-only", "no")
    try:
        keys = template_keys(replica)
        assert keys, "the processes stored their templates before the failover"
        client.delete(*keys)
    finally:
        client.config_set("replica-read-only", "yes")
    assert not template_keys(replica)


def _names(sentinel: Node, old_port: int) -> bool:
    try:
        _, port = sentinel.client().sentinel_get_master_addr_by_name(MASTER)
        return int(port) != old_port
    except redis.RedisError:
        return False


"""The Fluentd peer as a bench.versus side: ../shared/peers/fluentd/run.sh on free ports, a buffer dir per run.

The seed configuration (fluentd.conf beside run.sh) delivers `api.*` to
FLUENTD_ENDPOINT + the tag's second part + "/", from a file buffer that a
restart replays: the SIGKILL scenario restarts it on the same buffer path.
"""
from __future__ import annotations

from pathlib import Path

from .procs import REPO, BenchError, Cluster, connects, free_port, wait_until
from .sides import Side

PEER_DIR = REPO.parent / "shared" / "peers" / "fluentd"
RUNNING = "fluentd worker is now running"


class Fluentd(Side):
    name = "fluentd"
    role = "fluentd"

    def __init__(self, cluster: Cluster, peer_dir: Path = PEER_DIR):
        super().__init__(cluster)
        self.run_sh = peer_dir / "run.sh"
        if not self.run_sh.exists():
            raise BenchError(f"no Fluentd peer at {peer_dir} (run.sh missing)")
        self.http_port, self.forward_port = free_port(), free_port()
        self.buffer = cluster.tmp / "fluentd-buffer" / "api.buffer"

    def start(self) -> None:
        self.buffer.parent.mkdir(exist_ok=True)
        env = {"FLUENTD_HTTP_PORT": str(self.http_port), "FLUENTD_FORWARD_PORT": str(self.forward_port),
               "FLUENTD_ENDPOINT": f"http://127.0.0.1:{self.cluster.receiver_port}/api/",
               "FLUENTD_BUFFER_PATH": str(self.buffer)}
        running_before = self.cluster.log(self.role).count(RUNNING)
        self.cluster.spawn(self.role, ["bash", str(self.run_sh)], env=env)

        def ready() -> bool:
            proc = self.cluster.roles[self.role]
            if proc.poll() is not None:
                raise BenchError(f"fluentd exited with status {proc.returncode}:\n{self.cluster.log(self.role)[-3000:]}")
            # Its worker's line as well as the ports: right after a SIGKILL, under a producer's reconnects,
            # a connect to the old ports could still succeed for a moment.
            return (self.cluster.log(self.role).count(RUNNING) > running_before and connects(self.http_port)
                    and connects(self.forward_port))

        wait_until(ready, 60, "fluentd to listen on its HTTP and forward ports", interval=0.1)

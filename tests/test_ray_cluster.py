"""A Ray cluster as users start one (``ray start``): joined through ``execution.ray.address``, with
token authentication on, and one clear error, within seconds, when it cannot be joined."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import small
from zooframe.execution.ray_cluster import join_cluster
from zooframe.plugins.errors import ZooframeError

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_nothing_listens_is_one_error_naming_it():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ZooframeError, match=f"nothing answers at {address}.*ray start --head --port="):
        join_cluster(None, address)  # refused before Ray is asked


class FakeRay:
    """Records the address ``ray.init`` is called with: the check before it let the address through."""

    def __init__(self):
        self.addresses = []

    def init(self, address):
        self.addresses.append(address)


def not_probed(*args, **kwargs):
    raise AssertionError("the address was probed")


def test_a_ray_client_address_is_not_probed_and_goes_to_ray_init(monkeypatch):
    monkeypatch.setattr(socket, "create_connection", not_probed)
    ray = FakeRay()
    join_cluster(ray, "ray://head.example:10001")
    assert ray.addresses == ["ray://head.example:10001"]


def test_with_tls_on_only_the_port_is_probed_not_the_plain_grpc_service(monkeypatch):
    grpc = pytest.importorskip("grpc")
    monkeypatch.setattr(grpc, "insecure_channel", not_probed)  # a TLS head would refuse it
    monkeypatch.setenv("RAY_USE_TLS", "1")
    ray = FakeRay()
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        join_cluster(ray, address)
    assert ray.addresses == [address]


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start ... --block`` with one CPU, in a process group of its own."""
    with open(log, "w") as out:
        return subprocess.Popen([str(RAY), "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                 "--disable-usage-stats", "--block"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_started(node: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 45
    while "Ray runtime started" not in log.read_text():
        assert node.poll() is None, f"ray start ended: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"ray start did not start a node in 45 s: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def stop_nodes(nodes: list[subprocess.Popen]) -> None:
    """Each node's processes, all in its process group: asked to stop, then killed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for node in nodes:
            try:
                os.killpg(node.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        for node in nodes:
            try:
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


DRIVER = """
import json, sys, ray, zooframe
nodes = set()

def node_ids(m, trainer):  # the node each worker (a Ray actor) runs on
    where = lambda worker: ray.get_runtime_context().get_node_id()
    nodes.update(ray.get([actor.__ray_call__.remote(where) for actor in trainer.engine.actors]))

result = zooframe.run(json.load(open(sys.argv[1])), output=sys.argv[2], on_step=node_ids)
json.dump({"status": result.summary["status"], "nodes": sorted(nodes)}, open(sys.argv[3], "w"))
"""


@pytest.mark.slow
def test_a_two_node_cluster_with_token_authentication_trains_on_both_nodes(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    port = free_port()
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["PYTHONPATH"] = str(ROOT)
    # the head as Ray sets it up: with a token at hand and RAY_AUTH_MODE unset, Ray turns token
    # authentication on; a node that joins it needs RAY_AUTH_MODE=token and the same token
    head_env = {**base, "RAY_AUTH_TOKEN": token}
    node_env = {**head_env, "RAY_AUTH_MODE": "token"}
    config = small(steps=3)
    config["execution"] = {"backend": "ray", "workers": 2, "ray": {"address": f"127.0.0.1:{port}"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    nodes = []
    with tempfile.TemporaryDirectory(prefix="zf-ray-") as temp:  # short: Ray's socket paths must fit
        try:
            nodes.append(start_node(["--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false"],
                                    head_env, tmp_path / "head"))
            wait_started(nodes[0], tmp_path / "head")
            # the second node joins while drivers without the token are refused
            nodes.append(start_node([f"--address=127.0.0.1:{port}"], node_env, tmp_path / "node"))
            for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
                monkeypatch.delenv(name, raising=False)
            with pytest.raises(ZooframeError, match=f"127.0.0.1:{port} requires token authentication, and this "
                               "process sends no token: set RAY_AUTH_MODE=token"):
                join_cluster(None, f"127.0.0.1:{port}")  # the driver's first words; ray is never asked
            monkeypatch.setenv("RAY_AUTH_MODE", "token")
            monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
            with pytest.raises(ZooframeError, match="the token this process sends is not the cluster's"):
                join_cluster(None, f"127.0.0.1:{port}")
            wait_started(nodes[1], tmp_path / "node")
            driver = subprocess.run([sys.executable, "-c", DRIVER, *(str(tmp_path / f) for f in (
                "config.json", "run", "result.json"))], capture_output=True, text=True, env=node_env, timeout=180)
            assert driver.returncode == 0, driver.stderr[-3000:]
            result = json.loads((tmp_path / "result.json").read_text())
            assert result["status"] == "completed"
            assert len(result["nodes"]) == 2  # one worker on each node: each node has one CPU
        finally:
            stop_nodes(nodes)

"""Joining a Ray cluster started with ``ray start``: one clear error, within seconds, when it cannot
be reached (nothing listening, or token authentication that this process does not satisfy), in
place of Ray's retries and its traceback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..plugins.errors import ZooframeError, first_line

PROBE_TIMEOUT_S = 5
SEE = "see docs/scale-out.md, 'A Ray cluster'"


def auth_token() -> str | None:
    """The token Ray would send, looked up as Ray does it: only with ``RAY_AUTH_MODE=token``, from
    ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS address, or None for one with a scheme (``ray://``: Ray Client's)."""
    if "://" in address:
        return None
    host, _, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def cluster_problem(address: str) -> str | None:
    """Why the Ray head at ``address`` (host:port of its GCS) cannot be joined from here, or None when
    it answers this process (or when the address is not one to probe, such as ``ray://``). With TLS
    (``RAY_USE_TLS``) only that something listens is checked: the probe speaks plain gRPC."""
    where = _host_port(address)
    if where is None:
        return None
    try:
        socket.create_connection(where, timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return (f"nothing answers at {address} ({exc.strerror or exc}): no Ray head listens there. Start one with "
                f"`ray start --head --port={where[1]}` on that machine, or set execution.ray.address to the head's "
                "host:port (`ray start --head` prints it; 'auto' joins the cluster at RAY_ADDRESS or this machine's)")
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # as Ray reads it
        return None
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # a Ray without these modules: ray.init says what it finds
        return None
    token = auth_token()
    with grpc.insecure_channel(address) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S,
                metadata=[("authorization", f"Bearer {token}")] if token else None)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return _unauthenticated(address, token)
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # another Ray version: let ray.init judge
                return None
            return (f"{address} accepts connections but does not answer as a Ray head ({exc.code().name}: "
                    f"{exc.details()}); execution.ray.address is the host:port `ray start --head` printed")
    return None


def _unauthenticated(address: str, token: str | None) -> str:
    if token is None:
        what = ("this process sends no token: set RAY_AUTH_MODE=token here" if
                os.environ.get("RAY_AUTH_MODE", "").lower() != "token" else
                "RAY_AUTH_MODE is 'token' here but there is no token: set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                "write ~/.ray/auth_token")
    else:
        what = "the token this process sends is not the cluster's"
    return (f"the Ray cluster at {address} requires token authentication, and {what}. Give this process the "
            "cluster's token (`ray get-auth-token` on the head prints it) as RAY_AUTH_TOKEN, in a file named by "
            f"RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token, with RAY_AUTH_MODE=token; {SEE}")


def join_cluster(ray, address: str) -> None:
    """``ray.init`` at ``address``, or a :class:`ZooframeError` that says why not."""
    problem = cluster_problem(os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address)
    if problem is not None:
        raise ZooframeError(f"cannot join the Ray cluster (execution.ray.address {address!r}): {problem}")
    try:
        ray.init(address=address)
    except Exception as exc:  # ConnectionError, an authentication or version error: Ray's words, without the trace
        raise ZooframeError(f"cannot join the Ray cluster (execution.ray.address {address!r}): {type(exc).__name__}: "
                            f"{first_line(exc)}. Is a head running there (`ray status`), with the same Ray and Python "
                            f"versions as here, and, with token authentication, RAY_AUTH_MODE=token and the "
                            f"cluster's token set here? {SEE}") from None


def connect(ray, address: str | None, num_cpus: int, object_store_mb: int | None = None) -> bool:
    """Join the cluster at ``address`` (:func:`join_cluster`) or, without one, start a local Ray
    instance with ``num_cpus`` CPUs and no dashboard; nothing when this process is connected
    already. Returns whether it connected here, and so should ``ray.shutdown()`` at the end."""
    if ray.is_initialized():
        return False
    if address:
        join_cluster(ray, address)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=object_store_mb * 2**20 if object_store_mb else None)
    return True

import multiprocessing
import os

# What happens to be installed must not change the tests: built-ins only, unless a test asks.
os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _float_defaults():
    torch.set_default_dtype(torch.float32)
    yield


@pytest.fixture
def project_registry():
    """Built-ins plus this repository's own plugins (what schemas/ and examples/ describe)."""
    from zooframe.config.registry import Registry

    packages = ("phiflow", "external", "fipy", "devito")
    return Registry(load_external=False, plugins={f"zooframe-{name}": pytest.importorskip(f"zooframe_{name}.plugin")
                                                  for name in packages})


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole test session (start-up costs seconds); every test
    marked ``ray`` runs on it, so that no engine starts (and stops) an instance of its own."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _ray_tests_share_the_session_instance(request):
    if request.node.get_closest_marker("ray"):
        request.getfixturevalue("ray_instance")


# The modules every process worker needs: imported once, in the session's fork server.
WORKER_PRELOAD = ["torch", "numpy", "zooframe", "zooframe.execution.process_engine", "zooframe.execution.workers",
                  "tests.helpers"]


@pytest.fixture(scope="session")
def process_worker_context():
    """The start method of the session's process workers: a fork server, started once per session
    (on the first pool), that has imported torch and zooframe; each worker of each test's pool forks
    from it in milliseconds instead of spawning a fresh interpreter (seconds: torch's import), and
    leaves as quickly. The workers get their simulator and config pickled as with spawn, which
    zooframe uses outside the tests. What differs: they see the environment variables of the
    session's start, not a test's changes. Runs through the CLI in a subprocess (test_resume)
    still spawn their workers."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


class _Multiprocessing:
    """The multiprocessing module as zooframe.execution.process_engine sees it in the tests: the same
    but for ``get_context``, which gives the session's fork server."""

    def __init__(self, context):
        self._context = context

    def get_context(self, method=None):
        return self._context

    def __getattr__(self, name):
        return getattr(multiprocessing, name)


@pytest.fixture(autouse=True)
def _process_workers_fork_from_the_session_server(monkeypatch, process_worker_context):
    from zooframe.execution import process_engine

    monkeypatch.setattr(process_engine, "multiprocessing", _Multiprocessing(process_worker_context))

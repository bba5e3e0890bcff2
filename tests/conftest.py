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
    """One local Ray instance for the whole test session (start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False)
    yield
    ray.shutdown()

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
    from zooframe.registry import Registry

    phiflow_plugin = pytest.importorskip("zooframe_phiflow.plugin")
    external_plugin = pytest.importorskip("zooframe_external.plugin")
    return Registry(load_external=False, plugins={"zooframe-phiflow": phiflow_plugin,
                                                  "zooframe-external": external_plugin})

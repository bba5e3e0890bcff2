"""The run's snapshots figure names the quantity it shows and gives each row a colour bar."""

import pytest
import torch

import zooframe
from zooframe.builtins.simulators.burgers import Burgers, BurgersConfig
from zooframe.runs import figures

from .helpers import small

pytest.importorskip("matplotlib")


@pytest.fixture
def saved(monkeypatch):
    """The figures that figures.py saves, kept open for inspection."""
    from matplotlib.figure import Figure

    kept = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kwargs: kept.append(fig))
    return kept


def fields_2d(rows=("source", "corrected", "reference"), signed=True):
    x = torch.linspace(0, 6.28, 12)
    field = torch.stack([torch.sin(x[:, None] + 0.3 * t) * torch.cos(0.5 * x[None, :]) for t in range(9)])
    return {name: (field if signed else field.abs()) * (1 + 0.1 * i) for i, name in enumerate(rows)}


def test_each_row_of_2d_snapshots_has_a_colour_bar_named_after_the_quantity(tmp_path, saved):
    figures.snapshots(tmp_path / "s.png", fields_2d(), [2, 4, 8], "held-out case Re146.5", label="vorticity")
    (fig,) = saved
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 3 and all(bar.get_ylabel() == "vorticity" for bar in bars)
    assert fig.get_suptitle() == "held-out case Re146.5: vorticity"
    images = [image for ax in fig.axes for image in ax.get_images()]
    assert len(images) == 9 and len({image.get_clim() for image in images}) == 1  # one scale: rows compare
    low, high = images[0].get_clim()
    assert low == -high  # a signed field: centred on zero

    saved.clear()
    figures.snapshots(tmp_path / "m.png", fields_2d(signed=False), [2, 4, 8], "held-out case", label="|state|")
    low, high = saved[0].axes[0].get_images()[0].get_clim()
    assert low == 0 < high  # a magnitude starts at zero


def test_1d_snapshots_name_the_quantity_on_the_value_axis(tmp_path, saved):
    line = torch.sin(torch.linspace(0, 6.28, 16)).expand(5, 16)
    figures.snapshots(tmp_path / "s.png", {"source": line, "reference": 2 * line}, [1, 4], "case", label="|state|")
    assert saved[0].axes[0].get_ylabel() == "|state|" and saved[0].get_suptitle() == "case: |state|"


def test_the_simulator_names_what_render_gives():
    sim = Burgers(BurgersConfig(kind="burgers", resolution=8))
    assert sim.render_label == "|state|"  # the default render: the magnitude over channels

    class Divergence(Burgers):
        def render(self, state):
            return state[:, 0]

    class Named(Divergence):
        render_label = "u"

    assert Divergence(sim.config).render_label == "Divergence.render(state)"  # overridden, unnamed
    assert Named(sim.config).render_label == "u"


def test_a_run_labels_its_snapshots_with_the_simulators_quantity(tmp_path, monkeypatch):
    seen = []
    snapshots = figures.snapshots
    monkeypatch.setattr(figures, "snapshots", lambda *args, **kwargs: seen.append(kwargs) or snapshots(*args, **kwargs))
    config = small(steps=1)
    config["output"]["figures"] = True
    result = zooframe.run(config, output=tmp_path, progress=False)
    assert seen == [{"label": "|state|"}] and "snapshots.png" in result.summary["figures"]
    config["output"]["figures"] = False  # not part of the experiment: the folder's run is still this config's
    assert "nothing to do" in zooframe.run(config, output=tmp_path, resume=True).summary["resumed"]
    replaced = zooframe.run(config, output=tmp_path, force=True)
    assert replaced.summary["figures"] == "skipped: output.figures is false" and not any(tmp_path.glob("*.png"))

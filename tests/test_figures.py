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


def test_each_quantity_of_2d_snapshots_has_rows_and_a_colour_scale_of_its_own(tmp_path, saved):
    pressure = {name: 100 * field.abs() for name, field in fields_2d().items()}
    figures.quantity_snapshots(tmp_path / "s.png", {"u": fields_2d(), "p": pressure}, [2, 4, 8], "case")
    (fig,) = saved
    assert fig.get_suptitle() == "case: u, p"
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars == ["u"] * 3 + ["p"] * 3
    images = [image for ax in fig.axes for image in ax.get_images()]
    assert {image.get_clim() for image in images[:9]} != {image.get_clim() for image in images[9:]}
    assert len({image.get_clim() for image in images[9:]}) == 1 and images[9].get_clim()[0] == 0  # p: from zero


def test_a_state_of_several_fields_is_shown_channel_by_channel_or_as_the_plugin_names():
    class TwoFields(Burgers):
        @property
        def state_spec(self):
            return zooframe.StateSpec(("rho", "p"), (8,))

    class DensityOnly(TwoFields):
        figure_channels = ("rho",)

    class Misnamed(TwoFields):
        figure_channels = ("density",)

    config = BurgersConfig(kind="burgers", resolution=8)
    state = torch.stack([torch.ones(3, 8), 1e5 * torch.ones(3, 8)], dim=1)  # [B, C, N]
    fields = TwoFields(config).figure_fields(state)
    assert list(fields) == ["rho", "p"] and torch.equal(fields["p"], state[:, 1])  # no norm over mixed quantities
    assert list(DensityOnly(config).figure_fields(state)) == ["rho"]
    with pytest.raises(zooframe.ZooframeError, match=r"Misnamed.figure_channels names 'density', which its state "
                       r"does not hold \(its channels: rho, p\)"):
        Misnamed(config).figure_quantities()  # what a run checks before any work

    class Vorticity(TwoFields):
        render_label = "vorticity"

        def render(self, state):
            return state[:, 0] - state[:, 1]

    assert list(Vorticity(config).figure_fields(state)) == ["vorticity"]  # the plugin's own quantity


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


def test_a_run_labels_its_figures_with_the_channels_the_loss_and_the_metric(tmp_path, monkeypatch, saved):
    seen = []
    snapshots = figures.quantity_snapshots
    monkeypatch.setattr(figures, "quantity_snapshots", lambda *args: seen.append(list(args[1])) or snapshots(*args))
    config = small(steps=1)
    config["output"]["figures"] = True
    config["objective"] = {"loss": {"name": "mae"}}
    config["evaluation"]["metrics"] = ["rmse", "mae"]
    result = zooframe.run(config, output=tmp_path, progress=False)
    assert seen == [["u"]] and "snapshots.png" in result.summary["figures"]  # Burgers' channel, not |state|
    loss, errors, _ = saved
    assert loss.axes[0].get_ylabel() == "training loss (mae)"
    assert errors.axes[0].get_ylabel() == "RMSE vs reference" and "trained on the loss mae" in errors.axes[0].get_title()
    config["output"]["figures"] = False  # not part of the experiment: the folder's run is still this config's
    assert "nothing to do" in zooframe.run(config, output=tmp_path, resume=True).summary["resumed"]
    replaced = zooframe.run(config, output=tmp_path, force=True)
    assert replaced.summary["figures"] == "skipped: output.figures is false" and not any(tmp_path.glob("*.png"))

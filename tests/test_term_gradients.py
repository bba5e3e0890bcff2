"""The loss terms' gradients (the subspace estimator's surrogates) from one backward pass, against
one backward pass per term."""

import pytest
import torch

import zooframe
from zooframe.core.objective import CorrectionObjective, Coupling
from zooframe.runs.experiment import Experiment

from .helpers import small


@pytest.fixture(scope="module")
def experiment():
    config = small(unroll=4)
    config["model"].update(depth=1)
    config["execution"] = {"dtype": "float64"}
    with Experiment.build(zooframe.load_config(config)) as exp:
        yield exp, exp.sampler(4).sample(0)


@pytest.mark.parametrize("jacobian", ["identity", "drop", "exact"])
def test_one_backward_pass_gives_each_terms_gradient(experiment, jacobian):
    exp, window = experiment
    objective = CorrectionObjective(exp.runner, exp.flat, window, jacobian)
    theta = exp.flat.get()
    calls = exp.runner.calls
    grads, terms = objective.term_gradients(theta)
    if jacobian != "exact":
        assert exp.runner.calls - calls == 3  # the solver once per later step, for all terms
    looped, looped_terms = Coupling.term_gradients(objective, theta)  # a backward pass per term
    assert grads.shape == (4, exp.flat.dim) and (grads != 0).any(dim=1).all()
    torch.testing.assert_close(grads, looped, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms, looped_terms)
    with torch.no_grad():
        torch.testing.assert_close(terms, objective.terms(theta[None])[0])

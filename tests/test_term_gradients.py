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


def test_both_jacobians_give_each_terms_two_surrogates_from_one_rollout(experiment):
    exp, window = experiment
    theta, both = exp.flat.get(), CorrectionObjective(exp.runner, exp.flat, window, "both")
    calls = exp.runner.calls
    grads, terms = both.term_gradients(theta)
    assert exp.runner.calls - calls == 3  # the two sets of copies share the solver's calls
    for k, jacobian in enumerate(("drop", "identity")):
        alone, alone_terms = CorrectionObjective(exp.runner, exp.flat, window, jacobian).term_gradients(theta)
        torch.testing.assert_close(grads[4 * k:4 * k + 4], alone, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(terms[4 * k:4 * k + 4], alone_terms)
    torch.testing.assert_close(grads[0], grads[4])  # the first step's correction is the only one its term sees
    assert not torch.allclose(grads[1:4], grads[5:])
    looped, _ = Coupling.term_gradients(both, theta)
    torch.testing.assert_close(grads, looped, rtol=1e-9, atol=1e-12)  # the generic path: a rollout per Jacobian

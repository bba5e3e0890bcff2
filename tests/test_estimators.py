"""Gradient estimates against autograd on analytic functions and a small network loss."""

import math

import pytest
import torch

from zooframe.builtins.estimators.cge import CGE, CGEConfig
from zooframe.builtins.estimators.guided import Guided, GuidedConfig
from zooframe.builtins.estimators.rge import RGE, RGEConfig
from zooframe.builtins.estimators.subspace import Subspace, SubspaceConfig
from zooframe.core import analytic
from zooframe.execution.engine import LocalEngine
from zooframe.plugins.estimator import StepInputs

from .helpers import mlp_regression

D = 20


def true_grad(f, theta):
    theta = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta[None])[0], theta)
    return g


def estimate(estimator, f, theta, mask=None, seed=0, chunk_size=7, surrogate=None, surrogates=None, loss=None):
    gen = torch.Generator().manual_seed(seed)
    given = StepInputs(mask=mask, surrogate=surrogate, surrogates=surrogates, loss=loss)
    queries = estimator.ask(theta, gen, given)
    values = LocalEngine(chunk_size).evaluate(f, queries)
    return estimator.tell(queries, values), queries


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def mlp_loss():
    f, flat = mlp_regression(inputs=4, hidden=8, outputs=1, samples=32)
    return f, flat.get()


PROBLEMS = {
    "rosenbrock": lambda: (analytic.rosenbrock, torch.linspace(-1, 1.5, D, dtype=torch.float64)),
    "sum_sin": lambda: (analytic.sum_sin, torch.linspace(-2, 2, D, dtype=torch.float64)),
    "quadratic": lambda: (analytic.Quadratic(D, seed=1), torch.linspace(-1, 1, D, dtype=torch.float64)),
    "mlp_loss": mlp_loss,
}


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("scheme, threshold", [("central", 0.999), ("forward", 0.99)])
def test_cge_matches_autograd(problem, scheme, threshold):
    f, theta = PROBLEMS[problem]()
    g, _ = estimate(CGE(CGEConfig(kind="cge", mu=5e-3, scheme=scheme)), f, theta)
    assert cosine(g, true_grad(f, theta)) >= threshold


@pytest.mark.parametrize("scheme, per_coordinate, extra", [("forward", 1, 1), ("central", 2, 0)])
def test_cge_queries_only_active_coordinates(scheme, per_coordinate, extra):
    f, theta = PROBLEMS["quadratic"]()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[[1, 4, 5, 17]] = True
    g, queries = estimate(CGE(CGEConfig(kind="cge", scheme=scheme)), f, theta, mask)
    assert len(queries) == per_coordinate * 4 + extra
    assert torch.all(g[~mask] == 0)
    torch.testing.assert_close(g[mask], true_grad(f, theta)[mask], rtol=1e-2, atol=1e-2)


def test_rge_gaussian_mean_is_the_smoothed_gradient():
    # sum(sin) smoothed by N(0, mu^2 I) is exp(-mu^2 / 2) sum(sin): a mean that ignored the
    # smoothing (or had the wrong scale) would miss by far more than the tolerance.
    mu, q, seeds = 0.8, 8, 1500
    f, theta = analytic.sum_sin, torch.linspace(-2, 2, D, dtype=torch.float64)
    smoothed = math.exp(-mu**2 / 2) * torch.cos(theta)
    est = RGE(RGEConfig(kind="rge", mu=mu, q=q, distribution="gaussian", scheme="central"))
    mean = torch.stack([estimate(est, f, theta, seed=s)[0] for s in range(seeds)]).mean(0)
    n = q * seeds
    # per-direction variance of (u.g) u is (|g|^2 + g_i^2) summed over i: (d + 1)|g|^2; 4 sigma
    tolerance = 4 * math.sqrt((D + 1) / n) * float(smoothed.norm())
    assert float((mean - smoothed).norm()) < tolerance
    assert float((mean - torch.cos(theta)).norm()) > tolerance  # the smoothing is visible


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_rge_sphere_mean_is_the_gradient_of_a_quadratic(scheme):
    # a quadratic's ball-smoothed gradient equals its gradient
    q, seeds = 10, 1500
    f = analytic.Quadratic(D, seed=2)
    theta = torch.linspace(-1, 1, D, dtype=torch.float64)
    g = true_grad(f, theta)
    est = RGE(RGEConfig(kind="rge", mu=1e-3, q=q, distribution="sphere", scheme=scheme))
    mean = torch.stack([estimate(est, f, theta, seed=s)[0] for s in range(seeds)]).mean(0)
    # d (u.g) u has total variance about d |g|^2 per direction
    tolerance = 4 * math.sqrt((D + 2) / (q * seeds)) * float(g.norm())
    assert float((mean - g).norm()) < tolerance


def test_rge_respects_the_mask_and_counts_queries():
    f, theta = PROBLEMS["quadratic"]()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[:5] = True
    for scheme, n in (("forward", 7), ("central", 12)):
        g, queries = estimate(RGE(RGEConfig(kind="rge", q=6, scheme=scheme)), f, theta, mask)
        assert len(queries) == n
        assert torch.all(g[~mask] == 0)


def test_chunking_does_not_change_the_estimate():
    f, theta = PROBLEMS["mlp_loss"]()
    est = CGE(CGEConfig(kind="cge", scheme="central"))
    a, _ = estimate(est, f, theta, chunk_size=1)
    b, _ = estimate(est, f, theta, chunk_size=1000)
    torch.testing.assert_close(a, b)


def test_query_chunks_reassemble_the_full_set():
    theta = torch.arange(6, dtype=torch.float64)
    queries = CGE(CGEConfig(kind="cge", mu=0.5)).ask(theta, torch.Generator())
    full = queries.materialize(0, len(queries))
    assert full.shape == (7, 6)
    torch.testing.assert_close(full[0], theta)
    torch.testing.assert_close(full[1:] - theta, 0.5 * torch.eye(6, dtype=torch.float64))
    parts = torch.cat([queries.materialize(a, a + 3) for a in range(0, 7, 3)])
    torch.testing.assert_close(parts, full)


@pytest.mark.parametrize("estimator", [CGE(CGEConfig(kind="cge", scheme="central")),
                                       RGE(RGEConfig(kind="rge", q=4, scheme="forward")),
                                       Guided(GuidedConfig(kind="guided", q=3)),
                                       Guided(GuidedConfig(kind="guided", q=3, scheme="forward")),
                                       Subspace(SubspaceConfig(kind="subspace")),
                                       Subspace(SubspaceConfig(kind="subspace", scheme="forward"))])
def test_query_subsets_rebuild_their_rows(estimator):
    """Remote engines send subsets, not materialized rows; a subset must give the same rows."""
    theta = torch.arange(6, dtype=torch.float64)
    given = StepInputs(surrogate=theta.flip(0), surrogates=torch.stack([theta.flip(0), theta**2, theta.cos()]),
                       loss=1.0)
    queries = estimator.ask(theta, torch.Generator().manual_seed(0), given)
    subsets = [queries.subset(a, a + 3) for a in range(0, len(queries), 3)]
    assert [len(q) for q in subsets] == [min(3, len(queries) - a) for a in range(0, len(queries), 3)]
    assert [q.with_center for q in subsets] == [queries.with_center] + [False] * (len(subsets) - 1)
    torch.testing.assert_close(torch.cat([q.materialize(0, len(q)) for q in subsets]),
                               queries.materialize(0, len(queries)))


# --- guided: a deliberately biased surrogate of a quadratic's gradient --------------------------

def biased_surrogate(g, rho, seed=3):
    """A vector at cosine ``rho`` to ``g``, of another length."""
    r = torch.randn(len(g), dtype=g.dtype, generator=torch.Generator().manual_seed(seed))
    r = r - (r @ g) / (g @ g) * g
    return 7.0 * (rho * g / g.norm() + math.sqrt(1 - rho**2) * r / r.norm())


def guided_problem(dim=D, rho=0.3):
    f = analytic.Quadratic(dim, seed=1)
    theta = torch.linspace(-1, 1, dim, dtype=torch.float64)
    g = true_grad(f, theta)
    return f, theta, g, biased_surrogate(g, rho)


def mean_cosine(alpha, q, seeds=40, **problem):
    f, theta, g, s = guided_problem(**problem)
    est = lambda: Guided(GuidedConfig(kind="guided", alpha=alpha, q=q, mu=1e-3))  # noqa: E731 (fresh history)
    return sum(cosine(estimate(est(), f, theta, seed=i, surrogate=s)[0], g) for i in range(seeds)) / seeds


def test_guided_mean_keeps_the_subspace_component_and_shrinks_the_rest():
    """E[g] = P grad + alpha' (I - P) grad, alpha' = beta alpha / n (the docstring's formula)."""
    alpha, q, seeds = 0.9, 8, 1500
    f, theta, g, s = guided_problem()
    u = s / s.norm()
    beta = 1 / (alpha / D + (1 - alpha))
    along = (u @ g) * u
    expected = along + beta * alpha / D * (g - along)
    est = Guided(GuidedConfig(kind="guided", alpha=alpha, q=q, mu=1e-4))
    mean = torch.stack([estimate(est, f, theta, seed=i, surrogate=s)[0] for i in range(seeds)]).mean(0)
    spread = beta * math.sqrt((D + 2) / (D * q * seeds)) * float(g.norm())  # 4 sigma of the isotropic part
    assert float((mean - expected).norm()) < 4 * spread
    assert float((mean - g).norm()) > 4 * spread  # the bias is real, and the test can see it
    assert float((mean - along).norm()) > 4 * spread


def test_guided_cosine_rises_with_alpha_and_q_when_queries_outnumber_coordinates():
    alphas, qs = (0.0, 0.5, 0.9, 0.99), (20, 80, 320)
    table = {(a, q): mean_cosine(a, q) for a in alphas for q in qs}
    assert table[(0.0, 80)] == pytest.approx(0.3, abs=1e-6)  # the subspace alone: the surrogate's cosine
    for q in qs:
        assert all(table[(a, q)] < table[(b, q)] for a, b in zip(alphas, alphas[1:])), table
    for a in (0.9, 0.99):  # where the isotropic part's noise is what more queries average out
        assert all(table[(a, q)] < table[(a, r)] for q, r in zip(qs, qs[1:])), table


def test_guided_beats_random_search_at_equal_queries_when_coordinates_outnumber_queries():
    dim, q, rho = 400, 10, 0.3
    guided = mean_cosine(0.5, q, dim=dim, rho=rho)
    f, theta, g, _ = guided_problem(dim=dim, rho=rho)
    rge = RGE(RGEConfig(kind="rge", q=q, mu=1e-3, scheme="central"))
    plain = sum(cosine(estimate(rge, f, theta, seed=i)[0], g) for i in range(40)) / 40
    assert plain < 0.2 and guided > 0.9 * rho  # RGE: about sqrt(q / n) = 0.16; guided: about rho


def test_guided_takes_only_the_surrogate_direction_not_its_values():
    f, theta, g, s = guided_problem()
    a, _ = estimate(Guided(GuidedConfig(kind="guided", q=5)), f, theta, seed=4, surrogate=s)
    b, _ = estimate(Guided(GuidedConfig(kind="guided", q=5)), f, theta, seed=4, surrogate=1000 * s)
    torch.testing.assert_close(a, b)


def test_guided_keeps_k_surrogates_and_respects_the_mask():
    f, theta, g, s = guided_problem()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[3:12] = True
    est = Guided(GuidedConfig(kind="guided", k=2, q=4))
    for shift in range(3):
        grad, queries = estimate(est, f, theta, mask=mask, surrogate=s.roll(shift), seed=shift)
        assert len(queries) == 8 and torch.all(grad[~mask] == 0) and torch.all(queries.directions[:, ~mask] == 0)
    assert len(est.history) == 2
    with pytest.raises(ValueError, match="surrogate"):
        est.ask(theta, torch.Generator())


# --- subspace: the gradient's projection onto the span of several biased surrogates -------------

def projection(vectors, g):
    q, _ = torch.linalg.qr(torch.stack(vectors, dim=1))
    return q @ (q.T @ g)


def test_subspace_is_the_gradients_projection_onto_the_surrogates_span():
    f, theta, g, _ = guided_problem()
    a, b = biased_surrogate(g, 0.3, seed=1), 4 * biased_surrogate(g, 0.5, seed=2)
    surrogates = torch.stack([a, b, 2 * a - b, torch.zeros_like(a)])  # rank 2: dependent and zero rows add nothing
    grad, queries = estimate(Subspace(SubspaceConfig(kind="subspace", mu=1e-4)), f, theta, surrogates=surrogates)
    assert len(queries) == 4
    expected = projection([a, b], g)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=0)
    assert cosine(grad, g) == pytest.approx(float(expected.norm() / g.norm()))
    assert cosine(grad, g) > max(cosine(a, g), cosine(b, g), cosine(a + b, g))  # more than any one surrogate


def test_subspace_gives_the_gradient_when_the_surrogates_span_it_whatever_their_scale():
    f, theta, g, _ = guided_problem()
    other = biased_surrogate(g, 0.0, seed=5)
    mixed = torch.stack([1000 * (g + 3 * other), -0.01 * (g - other)])  # neither is at cosine 1
    grad, _ = estimate(Subspace(SubspaceConfig(kind="subspace", mu=1e-4)), f, theta, surrogates=mixed)
    torch.testing.assert_close(grad, g, atol=1e-6, rtol=0)


def test_subspace_respects_the_mask_and_needs_its_surrogates():
    f, theta, g, s = guided_problem()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[2:9] = True
    surrogates = torch.stack([s, s.roll(3)])
    grad, queries = estimate(Subspace(SubspaceConfig(kind="subspace", mu=1e-4)), f, theta, mask=mask,
                             surrogates=surrogates)
    assert torch.all(grad[~mask] == 0) and torch.all(queries.directions[:, ~mask] == 0)
    torch.testing.assert_close(grad[mask], projection([s[mask], s.roll(3)[mask]], g[mask]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="surrogates"):
        Subspace(SubspaceConfig(kind="subspace")).ask(theta, torch.Generator(), StepInputs(surrogate=s))


# --- forward differences from the loss at theta that the surrogates' rollout gives ----------------

@pytest.mark.parametrize("problem", ["quadratic", "mlp_loss"])
def test_subspace_forward_differences_match_autograd_with_r_queries_and_no_query_at_theta(problem):
    """Surrogates that span the gradient: the forward estimate is the gradient up to its O(mu) bias,
    from r queries (none at theta: its loss comes with the step), as the central one is from 2r."""
    f, theta = PROBLEMS[problem]()
    g = true_grad(f, theta)
    other = biased_surrogate(g, 0.0, seed=5)
    surrogates = torch.stack([g + 3 * other, g - other, 2 * other])  # rank 2
    loss = float(f(theta[None])[0])
    errors = {}
    for mu in (1e-3, 1e-4):
        forward, queries = estimate(Subspace(SubspaceConfig(kind="subspace", mu=mu, scheme="forward")), f, theta,
                                    surrogates=surrogates, loss=loss)
        assert len(queries) == 2 and not queries.with_center
        assert not (queries.materialize(0, 2) == theta).all(dim=1).any()
        errors[mu] = float((forward - g).norm() / g.norm())
        assert cosine(forward, g) > 0.999
    assert errors[1e-4] < 0.2 * errors[1e-3]  # first order in mu
    central, queries = estimate(Subspace(SubspaceConfig(kind="subspace", mu=1e-3)), f, theta, surrogates=surrogates)
    assert len(queries) == 4 and float((central - g).norm() / g.norm()) < errors[1e-3]  # second order
    # the centre is the loss handed over, not a query: a wrong one shows in the estimate
    shifted, _ = estimate(Subspace(SubspaceConfig(kind="subspace", mu=1e-3, scheme="forward")), f, theta,
                          surrogates=surrogates, loss=loss + 1e-3)
    assert float((shifted - g).norm()) > 0.5
    with pytest.raises(ValueError, match="StepInputs.loss"):
        estimate(Subspace(SubspaceConfig(kind="subspace", scheme="forward")), f, theta, surrogates=surrogates)


def test_forward_schemes_declare_the_loss_and_drop_a_skipped_direction():
    assert "loss" in Subspace(SubspaceConfig(kind="subspace", scheme="forward")).inputs
    assert "loss" not in Subspace(SubspaceConfig(kind="subspace")).inputs
    assert "loss" in Guided(GuidedConfig(kind="guided", scheme="forward")).inputs
    f, theta, g, _ = guided_problem()
    basis = torch.eye(D, dtype=theta.dtype)[:3]
    subspace = Subspace(SubspaceConfig(kind="subspace", mu=1e-6, scheme="forward"))
    queries = subspace.ask(theta, torch.Generator(), StepInputs(surrogates=basis, loss=float(f(theta[None])[0])))
    values = f(queries.materialize(0, len(queries)))
    usable = torch.tensor([True, False, True])
    grad = subspace.tell(queries, values.masked_fill(~usable, float("nan")), usable)
    kept = queries.directions[usable]
    torch.testing.assert_close(grad, kept.T @ (kept @ g), atol=1e-5, rtol=0)
    assert subspace.tell(queries, values, torch.zeros(3, dtype=torch.bool)) is None


def test_guided_forward_differences_have_the_central_ones_mean():
    """Forward: q queries from the loss at theta; the same mean as central (to O(mu)), more variance."""
    alpha, q, seeds = 0.9, 8, 300
    f, theta, g, s = guided_problem()
    loss = float(f(theta[None])[0])
    means = {}
    for scheme in ("central", "forward"):
        est = Guided(GuidedConfig(kind="guided", alpha=alpha, q=q, mu=1e-4, scheme=scheme))
        runs = [estimate(est, f, theta, seed=i, surrogate=s, loss=loss) for i in range(seeds)]
        assert len(runs[0][1]) == (q if scheme == "forward" else 2 * q)
        means[scheme] = torch.stack([grad for grad, _ in runs]).mean(0)
    beta = 1 / (alpha / D + (1 - alpha))
    spread = beta * math.sqrt((D + 2) / (D * q * seeds)) * float(g.norm())
    assert float((means["forward"] - means["central"]).norm()) < 6 * spread

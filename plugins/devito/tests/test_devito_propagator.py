"""The Devito kernel: the order of its staggered variable-density operator, rows that never
touch, one compiled Operator per dtype for every batch size, kept out of pickles, and quiet logs."""

import math
import pickle

import numpy as np
import pytest

from zooframe_devito.propagator import Propagator


def _operator_error(n: int, space_order: int) -> float:
    """Max error of div(b grad u) as one undamped step reveals it: u+ - 2u + u- = kdt2 div(b grad u)."""
    h = 1.0 / (n - 1)
    x = np.arange(n) * h
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = np.sin(3 * X) * np.cos(2 * Y)
    b = lambda X, Y: 1 + 0.5 * np.sin(X + Y)  # noqa: E731
    exact = 0.5 * np.cos(X + Y) * (3 * np.cos(3 * X) * np.cos(2 * Y) - 2 * np.sin(3 * X) * np.sin(2 * Y)) \
        - 13 * b(X, Y) * u
    coefficients = {"kdt2": np.ones((1, n, n)), "bx": b(X + h / 2, Y)[None], "by": b(X, Y + h / 2)[None],
                    "damp": np.zeros((1, n, n))}
    prop = Propagator((n, n), h, space_order)
    nxt, _ = prop.advance(u[None], u[None], coefficients, 1)
    inner = slice(space_order, n - space_order)  # away from the zero halo
    return float(np.abs((nxt[0] - u)[inner, inner] - exact[inner, inner]).max())


@pytest.mark.parametrize("space_order", [2, 4])
def test_the_staggered_operator_converges_at_its_order(space_order):
    coarse, fine = _operator_error(17, space_order), _operator_error(33, space_order)
    assert math.log2(coarse / fine) == pytest.approx(space_order, abs=0.4)


def _waves(rows: int, n: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    cur, prev = rng.normal(size=(2, rows, n, n))
    coefficients = {"kdt2": rng.uniform(0.05, 0.15, (rows, n, n)), "bx": rng.uniform(0.5, 2, (rows, n, n)),
                    "by": rng.uniform(0.5, 2, (rows, n, n)), "damp": rng.uniform(0, 0.1, (rows, n, n))}
    return cur, prev, coefficients


def test_rows_never_touch_and_every_batch_size_reuses_one_operator():
    prop = Propagator((20, 20), 0.1, 4)
    cur, prev, coef = _waves(5)
    together = prop.advance(cur, prev, coef, 6)
    for i in (0, 3):
        alone = prop.advance(cur[i:i + 1], prev[i:i + 1], {k: v[i:i + 1] for k, v in coef.items()}, 6)
        np.testing.assert_array_equal(alone[0][0], together[0][i])
        np.testing.assert_array_equal(alone[1][0], together[1][i])
    assert prop.compiled == 1  # batch sizes 5 and 1: one Operator
    assert together[0].dtype == np.float64 and prop.compiled == 1  # float64 rows: the float64 Operator
    prop.advance(cur.astype(np.float32), prev.astype(np.float32), coef, 6)
    assert prop.compiled == 2  # and one for float32


def test_coefficients_are_made_once_per_key():
    prop = Propagator((20, 20), 0.1, 2)
    cur, prev, coef = _waves(2)
    calls = []

    def make():
        calls.append(1)
        return coef

    a = prop.advance(cur, prev, make, 3, key="cases-a")
    b = prop.advance(cur, prev, make, 3, key="cases-a")
    assert len(calls) == 1
    np.testing.assert_array_equal(a[0], b[0])
    other = {**coef, "kdt2": coef["kdt2"] * 0.5}
    c = prop.advance(cur, prev, other, 3, key="cases-b")
    assert not np.array_equal(c[0], a[0])


def test_a_pickled_propagator_leaves_its_kernels_behind_and_rebuilds_them():
    prop = Propagator((20, 20), 0.1, 2)
    cur, prev, coef = _waves(2)
    first = prop.advance(cur, prev, coef, 3)
    blob = pickle.dumps(prop)
    assert len(blob) < 2000  # shape, spacing, order: no Operator, no Devito data
    copy = pickle.loads(blob)
    assert copy.compiled == 0
    np.testing.assert_array_equal(copy.advance(cur, prev, coef, 3)[0], first[0])
    assert copy.compiled == 1


def test_devito_stays_quiet_and_its_global_log_level_is_left_alone(caplog, monkeypatch):
    from devito import configuration

    monkeypatch.delenv("DEVITO_LOGGING", raising=False)
    before = configuration["log-level"]
    cur, prev, coef = _waves(1)
    with caplog.at_level("DEBUG", logger="Devito"):
        Propagator((20, 20), 0.1, 2).advance(cur, prev, coef, 2)
    assert not [r for r in caplog.records if r.name == "Devito" and r.levelno < 30]
    assert configuration["log-level"] == before
    with caplog.at_level("DEBUG", logger="Devito"):
        Propagator((20, 20), 0.1, 2, log_level="DEBUG").advance(cur, prev, coef, 2)
    assert any("Operator" in r.getMessage() for r in caplog.records)  # the config field turns them back on
    assert configuration["log-level"] == before

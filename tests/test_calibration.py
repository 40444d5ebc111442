import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropout_lab as dl
from dropout_lab import calibration


def overconfident(seed, num=400, num_classes=5, scale=4.0, accuracy=0.6):
    """Logits whose argmax is right with probability ``accuracy``, too sharp at T = 1."""
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((num, num_classes), np.float32)
    noise = rng.integers(0, num_classes, num)
    labels = np.where(rng.random(num) < accuracy, np.argmax(logits, -1), noise)
    return logits, labels.astype(np.int32)


def nll_at(logits, labels, temperature):
    scaled = calibration.apply_temperature(logits, temperature)
    return dl.metrics.nll_from_log_probs(jax.nn.log_softmax(scaled), labels)


GRID = jnp.exp(jnp.linspace(jnp.log(1e-2), jnp.log(1e2), 4001))


def test_fitted_temperature_minimises_nll_over_a_fine_grid_and_vmaps_over_seeds():
    data = [overconfident(seed) for seed in range(3)]
    # MC-averaged log-probabilities: the log of the mean of 8 sharpened passes.
    logits_t = 3.0 * np.random.default_rng(9).standard_normal((8, 400, 5), np.float32)
    log_mean = dl.uncertainty.predictive_log_probs(jax.nn.log_softmax(logits_t + data[0][0]))
    data.append((log_mean, data[0][1]))
    logits = jnp.stack([d[0] for d in data])
    labels = jnp.stack([d[1] for d in data])

    @jax.jit
    def run(logits, labels):
        fitted = jax.vmap(calibration.fit_temperature)(logits, labels)
        grid = jax.vmap(lambda z, y: jax.vmap(lambda t: nll_at(z, y, t))(GRID))(logits, labels)
        at_fit = jax.vmap(nll_at)(logits, labels, fitted)
        return fitted, grid, at_fit

    fitted, grid, at_fit = run(logits, labels)
    fit_one = jax.jit(calibration.fit_temperature)
    one_by_one = jnp.stack([fit_one(logits[i], labels[i]) for i in range(len(data))])
    chex.assert_shape(fitted, (4,))
    np.testing.assert_allclose(fitted, one_by_one, rtol=1e-6)
    assert np.all(np.asarray(fitted[:3]) > 1.5)  # overconfident logits are softened
    # The fit is at least as good as the best of 4001 temperatures (grid step 0.23%),
    # up to float32 rounding of the NLL.
    np.testing.assert_array_less(at_fit, grid.min(axis=1) + 1e-6)
    # and it is the grid minimiser to within one grid step.
    best = GRID[jnp.argmin(grid, axis=1)]
    np.testing.assert_allclose(fitted, best, rtol=5e-3)


def test_fit_temperature_clamps_to_bounds_and_keeps_the_argmax():
    # Separable data: the NLL falls as T -> 0, so the fit is the lower bound.
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    labels = jnp.array([0, 1, 0])
    t = calibration.fit_temperature(logits, labels, bounds=(0.1, 10.0))
    np.testing.assert_allclose(t, 0.1, rtol=1e-6)
    scaled = calibration.apply_temperature(logits, 3.0)
    np.testing.assert_array_equal(jnp.argmax(scaled, -1), jnp.argmax(logits, -1))
    np.testing.assert_allclose(scaled, logits / 3.0)


def test_fit_temperature_validates():
    with pytest.raises(ValueError, match="labels"):
        calibration.fit_temperature(jnp.zeros((4, 3)), jnp.zeros((5,), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        calibration.fit_temperature(jnp.zeros((4, 3)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="num_iters"):
        calibration.fit_temperature(jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32), num_iters=0)

"""dropout_lab.schedules: exact values, the paper's schedules, optax agreement, jit/vmap
invariance, monotonicity, per-layer profiles, use inside dl.dropout, and validation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dropout_lab as dl
from dropout_lab import schedules as sch

F32 = np.float32
STEPS = np.arange(0, 301)
# A few float32 ulps: XLA may fuse (FMA) what eager rounds twice.
CLOSE = {"rtol": 1e-6, "atol": 1e-7}


def paper_drop_scheduler(rate, total, cutoff, mode, schedule):
    """Liu et al.'s drop_scheduler (facebookresearch/dropout), one iteration per epoch."""
    if mode == "early":
        head = np.full(cutoff, rate) if schedule == "constant" else np.linspace(rate, 0, cutoff)
        return np.concatenate((head, np.zeros(total - cutoff)))
    return np.concatenate((np.zeros(cutoff), np.full(total - cutoff, rate)))


# Every schedule family with a builder taking concrete or traced parameters (a, b, c, d).
FAMILIES = {
    "constant": lambda a, b, c, d: sch.constant(a),
    "early": lambda a, b, c, d: sch.early(a, b),
    "early_linear": lambda a, b, c, d: sch.early(a, b, decay="linear"),
    "late": lambda a, b, c, d: sch.late(a, b),
    "linear": lambda a, b, c, d: sch.linear(a, c, b, d),
    "cosine": lambda a, b, c, d: sch.cosine(a, c, b, d),
}
# Grid of parameters: rate a, steps b (until / start / transition_steps), end rate c, begin d.
GRID = (
    np.array([0.0, 0.1, 0.5, 0.9, 0.3], F32),
    np.array([1, 7, 100, 250, 2], np.int32),
    np.array([0.2, 0.0, 0.99, 0.1, 0.3], F32),
    np.array([0, 3, 50, 0, 299], np.int32),
)
MONOTONE = {"constant": 0, "early": -1, "early_linear": -1, "late": 1, "linear": 0, "cosine": 0}


def at(schedule, steps):
    """The schedule at ``steps``, one compiled call (eager op-by-op is slow on CPU)."""
    return np.asarray(jax.jit(schedule)(np.asarray(steps)))


def test_exact_values_at_chosen_steps():
    cases = {  # name: (schedule, steps); all evaluated in one compiled call
        "constant": (sch.constant(0.1), [0, 5]),
        "early": (sch.early(0.1, until=100), [[0, 99], [100, 10_000]]),  # steps of any shape
        "late": (sch.late(0.2, start=50), [0, 49, 50, 10_000]),
        "ramp": (sch.linear(0.05, 0.2, 100, transition_begin=50), [0, 50, 150, 999, 100, 125]),
        "down": (sch.cosine(0.2, 0.0, transition_steps=100), [0, 100, 10_000, 50, 25]),
        "fine": (sch.cosine(0.1, 0.9, 10_000), np.arange(10_001)),
    }
    got = jax.jit(lambda: {k: f(np.asarray(t)) for k, (f, t) in cases.items()})()
    got = {k: np.asarray(v) for k, v in got.items()}
    assert got["constant"].tolist() == [F32(0.1)] * 2
    assert got["early"].tolist() == [[F32(0.1)] * 2, [0] * 2]
    assert got["late"].tolist() == [0] * 2 + [F32(0.2)] * 2
    assert got["ramp"][:4].tolist() == [F32(0.05)] * 2 + [F32(0.2)] * 2
    np.testing.assert_allclose(got["ramp"][4:], [0.125, 0.1625], **CLOSE)
    assert got["down"][:3].tolist() == [F32(0.2), 0, 0]
    np.testing.assert_allclose(got["down"][3:], [0.1, 0.1 * (1 + np.cos(np.pi / 4))], **CLOSE)
    # A fine cosine up from 0.1 to 0.9 over 10^4 steps: exact ends, monotone in float32.
    fine = got["fine"]
    assert fine[0] == F32(0.1) and fine[-1] == F32(0.9) and np.all(np.diff(fine) >= 0)


@pytest.mark.parametrize("decay", ["constant", "linear"])
def test_early_and_late_match_the_papers_scheduler(decay):
    total, cutoffs = 60, np.array([0, 1, 2, 37, 60])
    steps = np.arange(total)
    early = jax.jit(jax.vmap(lambda c: sch.early(0.1, until=c, decay=decay)(steps)))(cutoffs)
    late = jax.jit(jax.vmap(lambda c: sch.late(0.1, start=c)(steps)))(cutoffs)
    for i, cutoff in enumerate(cutoffs):
        expected = paper_drop_scheduler(0.1, total, cutoff, "early", decay)
        np.testing.assert_allclose(early[i], expected, **CLOSE)
        assert early[i, 0] == (F32(0.1) if cutoff else 0)  # exact where the paper is
        np.testing.assert_array_equal(
            late[i], paper_drop_scheduler(F32(0.1), total, cutoff, "late", 0)
        )


def test_linear_and_cosine_agree_with_optax():
    steps = np.arange(0, 300)
    for init, end in [(0.3, 0.05), (0.0, 0.5)]:
        ours = at(sch.linear(init, end, 200, 40), steps)
        np.testing.assert_allclose(
            ours, at(optax.linear_schedule(init, end, 200, 40), steps), **CLOSE
        )
    # optax's cosine decays from I to alpha * I: compare at E = alpha * I.
    init, alpha = 0.4, 0.25
    ours = at(sch.cosine(init, alpha * init, 200), steps)
    np.testing.assert_allclose(
        ours, at(optax.cosine_decay_schedule(init, 200, alpha), steps), **CLOSE
    )


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_jit_and_vmap_equal_eager_and_stay_in_range(name):
    build = FAMILIES[name]
    # The whole grid as one program: parameters and steps traced.
    grid = np.asarray(jax.jit(jax.vmap(lambda a, b, c, d: build(a, b, c, d)(STEPS)))(*GRID))
    assert grid.shape == (len(GRID[0]), len(STEPS)) and grid.dtype == np.float32
    assert np.all((grid >= 0) & (grid < 1))
    probe = STEPS[::30]
    for i, point in enumerate(zip(*GRID, strict=True)):
        schedule = build(*[p.item() for p in point])  # Python numbers: the validated path
        eager = np.array([schedule(int(t)) for t in probe])
        np.testing.assert_allclose(grid[i, probe], eager, **CLOSE)
        direction = MONOTONE[name] or np.sign(point[2] - point[0])  # ramps: sign of E - I
        assert np.all(np.diff(grid[i]) * direction >= 0) if direction else np.ptp(grid[i]) == 0
    jitted = jax.jit(schedule)  # a traced step, concrete parameters: one compile for all steps
    np.testing.assert_allclose(np.array([jitted(t) for t in probe]), eager, **CLOSE)


def test_step_dtypes():
    ramp = sch.linear(0.1, 0.3, transition_steps=10, transition_begin=5)
    assert at(ramp, np.array([2, 7], np.uint32))[0] == F32(0.1)  # max(t, B) - B: no wrap-around
    np.testing.assert_allclose(at(ramp, np.array([10.0], np.float32)), [0.2], **CLOSE)
    assert at(sch.early(0.2, until=2.5), np.array([2.4, 2.5])).tolist() == [F32(0.2), 0]
    with jax.enable_x64(True):
        assert at(sch.cosine(0.3, 0.1, 10), np.arange(5, dtype=np.int64)).dtype == np.float32


def test_depth_profiles():
    up, down, zero, deit, one = jax.jit(  # concrete rates: the validated path, one compile
        lambda: (
            sch.linear_depth(0.4, 4),
            sch.decreasing_depth(0.4, 4),
            sch.decreasing_depth(0.3, 7, include_zero=True),
            sch.linear_depth(0.9, 12, include_zero=True),
            sch.linear_depth(0.5, 1),
        )
    )()
    assert one.tolist() == [0.5]
    chex.assert_trees_all_equal(up, jax.jit(lambda: dl.drop_path_rates(0.4, 4))())
    np.testing.assert_allclose(up, [0.1, 0.2, 0.3, 0.4], **CLOSE)
    chex.assert_trees_all_equal(down, up[::-1])
    np.testing.assert_allclose(zero, np.linspace(0.3, 0, 7), **CLOSE)
    np.testing.assert_allclose(deit, np.linspace(0, 0.9, 12), **CLOSE)
    for rates, sign in [(up, 1), (down, -1), (zero, -1), (deit, 1)]:
        chex.assert_type(rates, jnp.float32)
        assert np.all(np.diff(rates) * sign >= 0) and np.all((rates >= 0) & (rates < 1))


def by_layer_and_composition(by_layer, profile, step_schedule, steps, num_layers):
    """``by_layer`` at ``steps`` and at the concrete step 17, and ``profile(schedule(17))``."""
    return jax.jit(
        lambda: (by_layer(steps), by_layer(17), profile(step_schedule(17), num_layers))
    )()


def test_per_layer_is_step_schedule_times_layer_weights():
    num_layers, steps = 6, np.arange(0, 120, 7)
    step_schedule = sch.early(0.3, until=50, decay="linear")
    step_rates = at(step_schedule, steps)
    weights_up = np.arange(1, num_layers + 1) / num_layers
    for profile, weights in [
        (sch.linear_depth, weights_up),
        (sch.decreasing_depth, weights_up[::-1]),
        (functools.partial(sch.linear_depth, include_zero=True), np.linspace(0, 1, num_layers)),
    ]:
        by_layer = sch.per_layer(step_schedule, num_layers, profile=profile)
        rates, one, composed = by_layer_and_composition(
            by_layer, profile, step_schedule, steps, num_layers
        )
        assert rates.shape == (len(steps), num_layers) and rates.dtype == np.float32
        np.testing.assert_allclose(rates, step_rates[:, None] * weights, **CLOSE)
        chex.assert_trees_all_equal(one, composed)  # a concrete step: profile(schedule(step))
    # An optax schedule is a step schedule too.
    warmup = sch.per_layer(optax.linear_schedule(0.0, 0.2, 10), 3)
    np.testing.assert_allclose(at(warmup, [5])[0], [0.1 / 3, 0.2 / 3, 0.1], **CLOSE)


def test_inside_dropout_under_jit_without_retracing():
    key, x = jax.random.key(0), jnp.ones((64, 32))
    schedule = sch.early(0.5, until=3)
    by_layer = sch.per_layer(sch.late(0.25, start=2), 2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(key, x, step):
        k1, k2 = jax.random.split(key)
        hidden = dl.dropout(k1, x, schedule(step))
        return dl.drop_path(k2, hidden, by_layer(step)[1])

    outputs = [train_step(jax.random.fold_in(key, t), x, jnp.asarray(t)) for t in range(5)]
    rows_kept = [np.asarray(out != 0).all(axis=1) for out in outputs]
    # Steps 0-1: dropout at 0.5 and no drop path: the zero fraction of 2048 elements is
    # 0.5 +- 0.011 (one standard deviation), so (0.3, 0.7) fails with probability < 1e-60.
    assert all(0.3 < float(np.mean(np.asarray(out) == 0)) < 0.7 for out in outputs[:2])
    # Steps 3-4: dropout off (rate 0 from `until`), drop path at 0.25: whole rows kept or
    # dropped; all 64 rows kept has probability 0.75^64 < 1e-7.
    for out, kept in zip(outputs[3:], rows_kept[3:], strict=True):
        assert np.all(np.asarray(out)[kept] == F32(1) / F32(0.75))
        assert np.all(np.asarray(out)[~kept] == 0) and 0 < kept.sum() < len(kept)


def test_invalid_concrete_parameters_raise_naming_value_and_fix():
    cases = [
        (lambda: sch.constant(1.0), r"rate=1\.0 is outside \[0, 1\).*e\.g\. rate=0\.1"),
        (lambda: sch.constant(-0.1), r"rate=-0\.1"),
        (lambda: sch.early(float("nan"), 10), r"rate=nan"),
        (lambda: sch.late(1.5, 10), r"rate=1\.5"),
        (lambda: sch.early(0.1, -1), r"until=-1 must be a step number >= 0.*until=1000"),
        (lambda: sch.late(0.1, -5), r"start=-5"),
        (lambda: sch.early(0.1, 10, decay="cosine"), r"decay='cosine' is not one of"),
        (lambda: sch.linear(0.1, 0.2, 0), r"transition_steps=0 must be a positive.*=1000"),
        (lambda: sch.cosine(0.1, 0.2, -3), r"transition_steps=-3"),
        (lambda: sch.linear(0.1, 0.2, 10, -1), r"transition_begin=-1"),
        (lambda: sch.cosine(0.1, 1.0, 10), r"end_rate=1\.0"),
        (lambda: sch.constant(0.1)(-1), r"step=-1 is negative.*state\.step"),
        (lambda: sch.early(0.1, 3)(np.array([0, -2])), r"negative"),
        (lambda: sch.per_layer(sch.constant(0.1), 3)(-1), r"step=-1"),
        (lambda: sch.constant(np.ones(2) * 0.1), r"rate must be a scalar.*vmap"),
        (lambda: sch.linear_depth(1.0, 3), r"rate=1\.0"),
        (lambda: sch.linear_depth(0.1, 0), r"num_layers=0"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
    for bad in [jax.random.key(0), True, "0.1", None]:
        with pytest.raises(TypeError, match="rate must be a real number"):
            sch.constant(bad)
    with pytest.raises(TypeError, match="step must be an integer step count"):
        sch.constant(0.1)(jax.random.key(0))


def test_invalid_traced_parameters_give_nan():
    # Under jit nothing can raise: the rate becomes NaN, and so does the op's output.
    rates = jax.jit(lambda r, u, t: sch.early(r, u)(t))
    assert np.isnan(rates(1.0, 10, 0)) and np.isnan(rates(0.1, -1, 0))
    assert np.isnan(rates(0.1, 10, -1)) and rates(0.1, 10, 0) == F32(0.1)
    ramp = jax.jit(lambda steps, begin: sch.linear(0.1, 0.2, steps, begin)(5))
    assert np.isnan(ramp(0, 0)) and np.isnan(ramp(10, -1)) and not np.isnan(ramp(10, 0))
    assert np.isnan(jax.jit(lambda r: sch.decreasing_depth(r, 3))(1.0)).all()
    out = jax.jit(lambda r: dl.dropout(jax.random.key(0), jnp.ones(4), sch.late(r, 0)(1)))(1.2)
    assert np.isnan(out).all()

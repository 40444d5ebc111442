"""The lab's transformer and rate schedules: shapes, dropout sites, scheduled steps, grids.

Tolerances: a traced rate 0 draws masks that keep everything and scales by 1/(1 - 0),
so it equals the deterministic forward up to the rounding of differently fused
kernels (measured ~2e-7 on logits of order 1; we assert 1e-5). Grid vs sequential:
the vmapped step runs the same masks, batches and element-wise math; only the batched
matmuls may round differently (as in tests/lab/test_sweep.py): 1e-5 relative.
"""

import dataclasses
import functools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropout_lab import schedules
from lab import ConfigError, load_dataset
from lab import grid as G
from lab.fit import fit, make_optimizer, make_setup, make_step
from lab.rate_schedule import schedule_hparams
from lab.settings import DropoutSettings, ScheduleSettings
from lab.sweep_config import load_sweep_config
from lab.transformer import SITES, Transformer, layer_rates, patches

CONFIGS = sorted(pathlib.Path("configs").glob("transformer_*.yaml"))
TINY = [
    "data.max_examples=200",
    "model.depth=1",
    "model.width=8",
    "model.heads=2",
    "model.patch=4",
    "train.epochs=1",
    "train.batch_size=32",
    "train.eval_batch_size=128",
    "sweep.seeds=1",
    "methods.mc.num_samples=2",
    "progress=false",
    "plots=false",
]
X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 64)), jnp.float32)


def _cfg(*extra, path="configs/transformer_digits.yaml"):
    return load_sweep_config(path, [*TINY, *extra])


@pytest.fixture(scope="module")
def data():
    return load_dataset(_cfg().data)


def test_patches_are_row_major_tiles():
    x = jnp.arange(2 * 64.0).reshape(2, 64)
    t = patches(x, (8, 8, 1), 2)
    chex.assert_shape(t, (2, 16, 4))
    np.testing.assert_array_equal(t[0, 0], [0, 1, 8, 9])  # top-left 2x2 patch
    np.testing.assert_array_equal(t[0, 4], [16, 17, 24, 25])  # second row of patches
    seq = patches(jnp.arange(40.0)[None], (40, 1), 4)
    chex.assert_shape(seq, (1, 10, 4))
    np.testing.assert_array_equal(seq[0, 1], [4, 5, 6, 7])


@pytest.mark.parametrize(("shape", "patch", "tokens"), [((8, 8, 1), 2, 16), ((40, 1), 4, 10)])
def test_model_shapes(shape, patch, tokens):
    model = Transformer(shape, 7, patch=patch, depth=2, heads=2, width=8, hidden=(6,))
    x = jnp.ones((3, int(np.prod(shape))))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    chex.assert_shape(jax.eval_shape(model.apply, variables, x), (3, 7))
    chex.assert_shape(variables["params"]["position"], (tokens, 8))
    chex.assert_shape(variables["params"]["block_1"]["mlp_in"]["kernel"], (8, 16))


def _model(variant, **kw):
    return Transformer((8, 8, 1), 5, patch=4, depth=1, heads=2, width=8, variant=variant, **kw)


@pytest.fixture(scope="module")
def params():
    return jax.jit(_model("none").init)(jax.random.key(0), X)  # every variant's parameters


@pytest.fixture(scope="module")
def forward(params):
    """``forward(variant)(rate, input_rate) -> (logits, {module path: output})``, jitted
    once per variant: a training forward that records the modules it calls."""
    compiled = {}

    def get(variant):
        if variant not in compiled:
            model = _model(variant)

            def f(rate, input_rate):
                out, state = model.apply(
                    params, X, rate, input_rate, deterministic=False,
                    rngs={"dropout": jax.random.key(1)},
                    capture_intermediates=True, mutable=["intermediates"],
                )  # fmt: skip
                flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
                names = ("/".join(str(getattr(k, "key", k)) for k in p[:-2]) for p, _ in flat)
                return out, dict(zip(names, (leaf for _, leaf in flat), strict=True))

            compiled[variant] = jax.jit(f)
        return compiled[variant]

    return get


# Modules of the sites that are modules of their own; "weights" and "keys" live in the
# attention kernel (checked by their effect below).
SITE_MODULES = {
    "hidden": {"drop_attention", "drop_hidden", "drop_mlp"},
    "paths": {"path_attention", "path_mlp"},
}


@pytest.mark.parametrize("variant", sorted(SITES))
def test_each_site_on_off(variant, params, forward):
    """The variant's modules are called and change the output; rate 0 is deterministic."""
    det = forward("none")(0.3, 0.3)[0]  # no dropout: the deterministic forward
    out, called = forward(variant)(0.3, 0.1)
    for site, modules in SITE_MODULES.items():
        built = {m for m in modules if f"block_0/{m}" in called}
        assert built == (modules if site in SITES[variant] else set()), (site, built)
    assert ("drop_embed" in called) == (variant != "none")
    np.testing.assert_allclose(forward(variant)(0.0, 0.0)[0], det, atol=1e-5)  # traced 0
    dropped = variant != "none"
    assert (not np.allclose(forward(variant)(0.3, 0.0)[0], det, atol=1e-4)) == dropped
    assert (not np.allclose(forward(variant)(0.0, 0.3)[0], det, atol=1e-4)) == dropped


def test_attention_sites_differ(forward):
    """Probabilities and keys dropped with the same key and rate give different outputs;
    DropKey masks logits out without rescaling, so even rate 0.99 stays finite."""
    weights, keys = forward("attention")(0.4, 0.0)[0], forward("dropkey")(0.4, 0.0)[0]
    assert not np.allclose(weights, keys, atol=1e-4)
    assert np.all(np.isfinite(forward("dropkey")(0.99, 0.0)[0]))


def test_layer_profiles():
    np.testing.assert_allclose(layer_rates("auto", "droppath", 0.4, 4), [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(layer_rates("auto", "dropkey", 0.4, 4), [0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(layer_rates("auto", "inverted", 0.4, 2), [0.4, 0.4])
    np.testing.assert_allclose(layer_rates("uniform", "dropkey", 0.4, 2), [0.4, 0.4])


def _references(total):
    """The schedules of ``scheduled``'s kinds at rate 0.3, from dl.schedules, in steps."""
    q = round(0.25 * total), round(0.5 * total), round(0.75 * total)
    return [
        (("constant", 0.0, 1.0, 0.0), schedules.constant(0.3)),
        (("early", 0.0, 0.25, 0.0), schedules.early(0.3, until=q[0])),
        (("late", 0.5, 1.0, 0.0), schedules.late(0.3, start=q[1])),
        (("linear", 0.25, 0.75, 0.1), schedules.linear(0.3, 0.1, q[2] - q[0], q[0])),
        (("cosine", 0.25, 0.75, 0.0), schedules.cosine(0.3, 0.0, q[2] - q[0], q[0])),
    ]


def test_schedule_rate_inside_jitted_step_without_retracing(data):
    """Every kind's rate at chosen steps of a jitted step, one trace for all of them.

    The step's loss is replaced by the rate it receives (plus 0 x the parameters).
    """

    def loss(model, params, x, y, key, hp, task):
        return hp["rate"] + 0.0 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(params))

    setup = make_setup(_cfg("train.epochs=8"), "inverted", data)
    setup = dataclasses.replace(setup, method=dataclasses.replace(setup.method, loss=loss))
    total = setup.schedule.total_steps
    step = jax.jit(chex.assert_max_traces(make_step(setup), n=1))
    params = {"w": jnp.ones(2)}
    state = {"params": params, "opt_state": make_optimizer(setup.train, 0.0).init(params)}
    batch = (data.x_train[:8], data.y_train[:8])
    base = {"rate": 0.3, "input_rate": 0.0, "alpha": 0.0, "weight_decay": 0.0}
    for schedule, reference in _references(total):
        hp = {k: jnp.float32(v) for k, v in (base | schedule_hparams(*schedule)).items()}
        for t in sorted({0, total // 4 - 1, total // 4, total // 2, total - 1}):
            state["step"] = jnp.int32(t)
            _, rate = step(state, batch, jax.random.key(0), hp)
            np.testing.assert_allclose(rate, reference(t), rtol=1e-6, err_msg=f"{schedule} {t}")
            if schedule[0] == "constant":  # the rate itself, bit for bit
                assert rate == np.float32(0.3)


def _unequal_leaves(grid_params, params) -> list[str]:
    """Leaves differing by more than 1e-5 relative (max |a - b| / max |b|).

    The attention key projection's bias adds the same amount to every logit of a
    query: its gradient is 0 in exact arithmetic and rounding noise in floats, which
    Adam turns into steps of the learning rate's size, so it is not compared (the
    logits are).
    """
    bad = []
    leaves = zip(
        jax.tree_util.tree_leaves_with_path(grid_params), jax.tree.leaves(params), strict=True
    )
    for (path, a), b in leaves:
        name = jax.tree_util.keystr(path)
        if "'key'" in name and "bias" in name:
            continue
        a, b = np.asarray(a), np.asarray(b)
        if np.max(np.abs(a - b)) > 1e-5 * np.max(np.abs(b)):
            bad.append(name)
    return bad


def test_default_config_grid_equals_sequential(data):
    """A tiny grid of the default config (rate 0, then rate 0.1 constant, early and late)
    as one vmapped program (its smoke run): finite learning curves, and each scheduled
    point equal to its sequential fit (:func:`lab.fit.fit` with the schedule in the
    settings). The evaluation of grids is architecture-free (tests/lab/test_sweep.py)."""
    cfg = _cfg()
    setup = make_setup(cfg, "inverted", data)
    points = G.grid_points(cfg, "inverted")
    assert [p.schedule for p in points] == ["constant", "constant", "early", "late"]
    curve = G.grid_curve(setup, data, cfg.train.eval_batch_size)
    training = G.train_grid(setup, data, points, curve=curve)
    curves = G.curve_rows(training, setup.schedule.steps_per_epoch)
    assert [c["series"] for c in curves] == [p.series for p in points]
    assert all(np.isfinite(c["test_nll"]).all() and c["epoch"][-1] == 1.0 for c in curves)
    predict = jax.jit(setup.model.apply)
    for i, p in enumerate(points[1:], start=1):
        schedule = ScheduleSettings(kind=p.schedule, start=p.start, until=p.until)
        settings = DropoutSettings(rate=p.rate, input_rate=0.0, schedule=schedule)
        one = dataclasses.replace(setup, settings=settings)  # the same programs
        state, _, _ = fit(one, data, p.seed, None, lambda params: {})
        grid_params = G.point_params(training.states, i)
        assert _unequal_leaves(grid_params, state["params"]) == [], p.series
        logits = [predict({"params": q}, X) for q in (grid_params, state["params"])]
        np.testing.assert_allclose(*logits, rtol=1e-5, atol=1e-5)
    early, late = (G.point_params(training.states, i) for i in (2, 3))
    assert not np.allclose(early["embed"]["kernel"], late["embed"]["kernel"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_its_losses_trace(path, data):
    """Every config loads and builds each method's grid; each loss traces on a tiny model
    (shapes only: the default config's real run is the test above)."""
    cfg = load_sweep_config(path, [])
    assert cfg.model.architecture == "transformer"
    assert cfg.sweep.seeds >= 3
    tiny = load_sweep_config(path, TINY)
    if cfg.data.name == "mnist1d":  # its shapes, without generating it
        x = np.zeros((64, 40), np.float32)
        data = dataclasses.replace(data, x_train=x, y_train=np.arange(64) % 10, num_classes=10)
    for method in cfg.sweep.methods:
        make_setup(cfg, method, data)  # the full model
        points = G.grid_points(cfg, method)
        assert len({p.seed for p in points}) == cfg.sweep.seeds
        setup = make_setup(tiny, method, data)
        hp = G.point_hparams(points[-1], cfg.sweep.input_rate, 0.0)
        params = jax.eval_shape(setup.model.init, jax.random.key(0), data.x_train[:1])
        x, y, key = data.x_train[:4], data.y_train[:4], jax.random.key(0)
        loss = functools.partial(setup.method.loss, setup.model, task=setup.task)
        out = jax.eval_shape(loss, params["params"], x, y, key, hp)
        chex.assert_shape(out, ())


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.heads=3", "model.width"),
        ("methods.inverted.schedule.kind=warm", "methods.inverted.schedule.kind"),
        ("methods.inverted.schedule.until=2", "methods.inverted.schedule.until"),
        ("methods.classic.enabled=true", "methods.classic.enabled"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(override)

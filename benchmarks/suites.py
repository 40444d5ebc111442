"""The benchmark comparisons; each runs in its own process (see run.py).

Every suite returns ``{"tables": [...], "targets": [...]}``. A table holds the timed
contenders of one comparison (``results``: name -> stats from ``_harness.compare``),
the name its ratios are taken against (``base``) and extra columns. A target is a
measured ratio with its goal.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re

import _harness as H
import attention as attention_suite  # benchmarks/attention.py
import flax.linen as nn
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dropout_lab as dl

MiB = 1 << 20


def _label(n: int) -> str:
    return f"{n // MiB}M" if n >= MiB else f"{n // 1024}K"


def _repeats(n: int, quick: bool) -> tuple[int, int]:
    if quick:
        return 3, 2
    if n <= MiB:
        return 15, 5
    if n <= 16 * MiB:
        return 5, 1
    return 3, 1


def _sizes(quick: bool) -> list[int]:
    return [1 << 16] if quick else [MiB, 16 * MiB, 64 * MiB]


def _rates(quick: bool) -> list[float]:
    return [0.5] if quick else [0.1, 0.5]


# ----------------------------------------------------------------------------------
# Dropout implementations compared everywhere (x: float32 [rows, 1024]).


def flax_linen(key, x, rate):
    return nn.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key})


def flax_nnx(key, x, rate):
    return nnx.Dropout(rate, deterministic=False)(x, rngs=key)


def bernoulli_where(key, x, rate):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def ours(key, x, rate):
    return dl.dropout(key, x, rate)


def ours_bernoulli(key, x, rate):
    return dl.dropout(key, x, rate, impl="bernoulli")


def ours_fast(key, x, rate):
    return dl.dropout(key, x, rate, impl="fast")


JAX_DROPOUTS = {
    "flax linen nn.Dropout": flax_linen,
    "flax nnx.Dropout": flax_nnx,
    "jax.random.bernoulli + where": bernoulli_where,
    "ours dl.dropout (default, exact)": ours,
    "ours impl='bernoulli'": ours_bernoulli,
    "ours impl='fast' (2^-16 grid)": ours_fast,
}
FLAX = "flax linen nn.Dropout"
OURS = "ours dl.dropout (default, exact)"
OURS_B = "ours impl='bernoulli'"
OURS_F = "ours impl='fast' (2^-16 grid)"


def _target(what: str, measured: float, goal: str, met: bool | None) -> dict:
    """A measured ratio and its goal; ``met=None`` marks a reference figure (no goal)."""
    met = None if met is None else bool(met)
    return {"target": what, "measured": round(float(measured), 3), "goal": goal, "met": met}


def _med(table: dict, name: str) -> float:
    return table["results"][name]["median_ms"]


# ----------------------------------------------------------------------------------


def forward(quick: bool) -> dict:
    torch = H.load_torch()
    key = jax.random.key(0)
    tables, targets = [], []
    for n in _sizes(quick):
        for rate in _rates(quick):
            x = jax.random.normal(jax.random.key(1), (n // 1024, 1024), jnp.float32)
            xn = np.asarray(x)
            yn = np.empty_like(xn)
            c = {
                "floor: numpy multiply(x, 2, out=y)": lambda xn=xn, yn=yn: np.multiply(
                    xn, 2, out=yn
                )
            }
            times2 = jax.jit(lambda x: x * 2)
            c["floor: jax jit(x * 2)"] = lambda x=x, f=times2: f(x)
            c["floor: jax jit(x * 2), donated"] = H.Donated(
                jax.jit(lambda x: x * 2, donate_argnums=0), jnp.array(x)
            )
            for name, fn in JAX_DROPOUTS.items():
                f = jax.jit(functools.partial(fn, rate=rate))
                c[name] = lambda f=f, x=x: f(key, x)
            c[f"{OURS}, donated"] = H.Donated(
                jax.jit(lambda x, rate=rate: ours(key, x, rate), donate_argnums=0), jnp.array(x)
            )
            if torch is not None:
                xt = torch.from_numpy(xn.copy())
                c["torch F.dropout (2 threads)"] = lambda xt=xt, rate=rate: (
                    torch.nn.functional.dropout(xt, rate, training=True)
                )
            reps, calls = _repeats(n, quick)
            res = H.compare(c, repeats=reps, calls=calls)
            base = "floor: numpy multiply(x, 2, out=y)"
            table = {
                "title": f"dropout forward, float32, n={_label(n)}, rate={rate}",
                "n": n,
                "rate": rate,
                "results": res,
                "base": base,
                "vs": FLAX,
            }
            tables.append(table)
            del c
            tag = f"n={_label(n)} rate={rate}"
            speedup = _med(table, FLAX) / _med(table, OURS)
            targets.append(_target(f"forward {tag}: flax / ours", speedup, ">= 4", speedup >= 4))
            sb = _med(table, FLAX) / _med(table, OURS_B)
            targets.append(
                _target(f"forward {tag}: flax / ours impl='bernoulli'", sb, "> 1", sb > 1)
            )
            sf = _med(table, OURS) / _med(table, OURS_F)
            targets.append(
                _target(f"forward {tag}: price of exactness, exact / fast", sf, "reference", None)
            )
            floor = _med(table, base)
            if n == MiB or quick:
                r = _med(table, OURS) / floor
                targets.append(_target(f"forward {tag}: ours / numpy floor", r, "<= 3", r <= 3))
            if n == 16 * MiB or quick:
                r = _med(table, f"{OURS}, donated") / floor
                targets.append(
                    _target(f"forward {tag}: ours donated / numpy floor", r, "<= 1.5", r <= 1.5)
                )
            if torch is not None and (n == MiB or quick):
                r = _med(table, "torch F.dropout (2 threads)") / _med(table, OURS)
                targets.append(_target(f"forward {tag}: torch / ours", r, ">= 5", r >= 5))
    return {"tables": tables, "targets": targets}


# ----------------------------------------------------------------------------------


def forward_backward(quick: bool) -> dict:
    """value_and_grad of L(x) = sum(dropout(key, x) * c), one jit."""
    torch = H.load_torch()
    key = jax.random.key(0)
    tables, targets = [], []
    for n in _sizes(quick):
        for rate in _rates(quick):
            x = jax.random.normal(jax.random.key(1), (n // 1024, 1024), jnp.float32)
            cvec = jax.random.normal(jax.random.key(2), (n // 1024, 1024), jnp.float32)
            c = {}
            for name, fn in JAX_DROPOUTS.items():
                loss = lambda x, fn=fn, rate=rate, c=cvec: jnp.sum(fn(key, x, rate) * c)  # noqa: E731
                g = jax.jit(jax.value_and_grad(loss))
                c[name] = lambda g=g, x=x: g(x)
            if torch is not None:
                xt = torch.from_numpy(np.asarray(x).copy()).requires_grad_(True)
                ct = torch.from_numpy(np.asarray(cvec).copy())

                def torch_step(xt=xt, ct=ct, rate=rate):
                    xt.grad = None
                    loss = (torch.nn.functional.dropout(xt, rate, training=True) * ct).sum()
                    loss.backward()
                    return xt.grad

                c["torch F.dropout (2 threads)"] = torch_step
            reps, calls = _repeats(n, quick)
            res = H.compare(c, repeats=reps, calls=calls)
            table = {
                "title": f"dropout forward+backward (value_and_grad), n={_label(n)}, rate={rate}",
                "n": n,
                "rate": rate,
                "results": res,
                "base": "jax.random.bernoulli + where",
                "vs": FLAX,
            }
            tables.append(table)
            del c
            tag = f"n={_label(n)} rate={rate}"
            r = _med(table, OURS_B) / _med(table, "jax.random.bernoulli + where")
            targets.append(
                _target(
                    f"fwd+bwd {tag}: ours impl='bernoulli' (recompute) / bernoulli+where autodiff",
                    r,
                    "<= 1.0",
                    r <= 1.0,
                )
            )
            r = _med(table, FLAX) / _med(table, OURS)
            targets.append(_target(f"fwd+bwd {tag}: flax / ours", r, "reference", None))
    return {"tables": tables, "targets": targets}


# ----------------------------------------------------------------------------------


_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "u32": 4, "i32": 4, "bool": 1, "pred": 1}


def _residual_bytes(fn, x) -> tuple[int, int]:
    """Bytes saved for the backward pass, excluding x: (arrays, scalars such as key/rate)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, x)
    arrays = scalars = 0
    for line in out.getvalue().splitlines():
        dtype, dims, why = re.match(r"(\S+?)\[([\d,]*)\] (.*)", line).groups()
        if "argument" in why:
            continue
        shape = [int(d) for d in dims.split(",") if d]
        nbytes = int(np.prod(shape)) * _BYTES.get(dtype, 8)  # keys: 8 bytes
        if shape:
            arrays += nbytes
        else:
            scalars += nbytes
    return arrays, scalars


def residuals(quick: bool) -> dict:
    torch = H.load_torch()
    n = (1 << 12) if quick else MiB
    key = jax.random.key(0)
    x = jnp.ones((n // 1024, 1024), jnp.float32)
    arrays, scalars = {}, {}
    for name, fn in JAX_DROPOUTS.items():
        arrays[name], scalars[name] = _residual_bytes(lambda x, fn=fn: fn(key, x, 0.5), x)
    if torch is not None:
        saved = []

        def pack(t):
            saved.append(t)
            return t

        xt = torch.ones(n, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            torch.nn.functional.dropout(xt, 0.5, training=True)
        others = [t for t in saved if t.data_ptr() != xt.data_ptr()]
        arrays["torch F.dropout (2 threads)"] = sum(
            t.numel() * t.element_size() for t in others if t.dim() > 0
        )
        scalars["torch F.dropout (2 threads)"] = sum(
            t.element_size() for t in others if t.dim() == 0
        )
    table = {
        "title": f"residuals saved for the backward pass (n={_label(n)}, excluding x itself)",
        "n": n,
        "residual_bytes": arrays,
        "scalar_bytes": scalars,
        "bytes_per_element": {k: v / n for k, v in arrays.items()},
    }
    targets = [
        _target(
            f"residual array bytes per element, {name}", arrays[name] / n, "== 0", arrays[name] == 0
        )
        for name in (OURS, OURS_B)
    ]
    return {"tables": [table], "targets": targets}


# ----------------------------------------------------------------------------------
# MLP 784-1024-1024-10, dropout 0.5 after each hidden layer.

SIZES = (784, 1024, 1024, 10)


def init_mlp(key, sizes=SIZES):
    params = []
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    for k, (a, b) in zip(jax.random.split(key, len(pairs)), pairs, strict=True):
        params.append(
            (jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a), jnp.zeros((b,), jnp.float32))
        )
    return params


def mlp(params, x, key, drop, rate=0.5):
    keys = jax.random.split(key, len(params) - 1)
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.relu(x)
            if drop is not None:
                x = drop(keys[i], x, rate)
    return x


def train_step(quick: bool) -> dict:
    sizes = (64, 128, 128, 10) if quick else SIZES
    batch = 32 if quick else 256
    opt = optax.adam(1e-3)
    x = jax.random.normal(jax.random.key(3), (batch, sizes[0]), jnp.float32)
    labels = jax.random.randint(jax.random.key(4), (batch,), 0, sizes[-1])
    key = jax.random.key(5)

    def make(drop, rdrop=False):
        def loss_fn(params, key):
            if rdrop:
                la, lb = dl.losses.rdrop_forward(lambda xx, k: mlp(params, xx, k, drop), x, key)
                return dl.losses.rdrop(la, lb, labels, alpha=1.0)
            logits = mlp(params, x, key, drop)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, state, key):
            loss, grads = jax.value_and_grad(loss_fn)(params, key)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        params = init_mlp(jax.random.key(0), sizes)
        holder = {"p": params, "s": opt.init(params)}

        def call():
            holder["p"], holder["s"], loss = step(holder["p"], holder["s"], key)
            return loss

        return call

    c = {
        "no dropout": make(None),
        "ours dl.dropout(0.5)": make(ours),
        "flax nn.Dropout(0.5)": make(flax_linen),
        "R-Drop, ours (2x batch + symmetric KL)": make(ours, rdrop=True),
    }
    res = H.compare(c, repeats=3 if quick else 7, calls=2 if quick else 10)
    table = {
        "title": f"MLP {'-'.join(map(str, sizes))} train step (adam), batch {batch}",
        "results": res,
        "base": "no dropout",
    }
    t = {k: v["median_ms"] for k, v in res.items()}
    r1 = t["ours dl.dropout(0.5)"] / t["no dropout"]
    r2 = t["flax nn.Dropout(0.5)"] / t["no dropout"]
    r3 = t["R-Drop, ours (2x batch + symmetric KL)"] / t["ours dl.dropout(0.5)"]
    targets = [
        _target("train step: ours / no dropout", r1, "<= 1.05", r1 <= 1.05),
        _target("train step: flax / no dropout", r2, "reference", None),
        _target("R-Drop step / ours dropout step", r3, "<= 2.0", r3 <= 2.0),
    ]
    return {"tables": [table], "targets": targets}


# ----------------------------------------------------------------------------------


def mc(quick: bool) -> dict:
    torch = H.load_torch()
    sizes = (64, 128, 128, 10) if quick else SIZES
    rows = 64 if quick else 1024
    params = init_mlp(jax.random.key(0), sizes)
    x = jax.random.normal(jax.random.key(3), (rows, sizes[0]), jnp.float32)
    key = jax.random.key(7)
    forward_fn = lambda p, x, k: jax.nn.softmax(mlp(p, x, k, ours))  # noqa: E731

    @functools.partial(jax.jit, static_argnums=3)
    def mc_sample(params, x, key, num_samples):
        probs = dl.mc.sample(lambda k: forward_fn(params, x, k), key, num_samples)
        return probs.mean(0), probs.var(0)

    @functools.partial(jax.jit, static_argnums=3)
    def mc_mean(params, x, key, num_samples):
        # Moments only (Welford/Chan merge over chunks of 2 passes): no [T, ...] stack.
        m = dl.mc.mean(lambda k: forward_fn(params, x, k), key, num_samples, chunk_size=2)
        return m.mean, m.variance

    step = jax.jit(
        lambda acc, acc2, p, x, k: (acc + forward_fn(p, x, k), acc2 + forward_fn(p, x, k) ** 2)
    )

    def loop(num_samples):
        keys = dl.mc.split_keys(key, num_samples)
        acc = acc2 = jnp.zeros((rows, sizes[-1]), jnp.float32)
        for t in range(num_samples):
            acc, acc2 = step(acc, acc2, params, x, keys[t])
        mean = acc / num_samples
        return mean, acc2 / num_samples - mean**2

    tmodel = None
    if torch is not None:
        layers = []
        for i, (w, b) in enumerate(params):
            lin = torch.nn.Linear(*w.shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.asarray(w).T.copy()))
                lin.bias.copy_(torch.from_numpy(np.asarray(b).copy()))
            layers.append(lin)
            if i < len(params) - 1:
                layers += [torch.nn.ReLU(), torch.nn.Dropout(0.5)]
        tmodel = torch.nn.Sequential(*layers).train()
        xt = torch.from_numpy(np.asarray(x).copy())

    def torch_loop(num_samples):
        with torch.no_grad():
            acc = torch.zeros(rows, sizes[-1])
            acc2 = torch.zeros(rows, sizes[-1])
            for _ in range(num_samples):
                p = torch.softmax(tmodel(xt), -1)
                acc += p
                acc2 += p * p
            mean = acc / num_samples
            return mean, acc2 / num_samples - mean * mean

    tables, targets = [], []
    for t_count, reps in [(4, 3)] if quick else [(10, 5), (50, 3), (100, 2)]:
        c = {
            "Python loop of a jitted forward": functools.partial(loop, t_count),
            "dl.mc.sample (jit, vmap over keys)": functools.partial(
                mc_sample, params, x, key, t_count
            ),
            "dl.mc.mean (chunk_size=2)": functools.partial(mc_mean, params, x, key, t_count),
        }
        if tmodel is not None:
            c["torch loop, no_grad, train mode (2 threads)"] = functools.partial(
                torch_loop, t_count
            )
        res = H.compare(c, repeats=reps, calls=1, warmup=1)
        table = {
            "title": f"MC dropout, T={t_count} passes, {rows} rows, MLP "
            f"{'-'.join(map(str, sizes))}",
            "results": res,
            "base": "Python loop of a jitted forward",
            "T": t_count,
        }
        tables.append(table)
        s = _med(table, "Python loop of a jitted forward") / _med(
            table, "dl.mc.sample (jit, vmap over keys)"
        )
        targets.append(_target(f"MC T={t_count}: loop / dl.mc.sample", s, ">= 1.3", s >= 1.3))
        s = _med(table, "Python loop of a jitted forward") / _med(
            table, "dl.mc.mean (chunk_size=2)"
        )
        targets.append(_target(f"MC T={t_count}: loop / dl.mc.mean", s, "reference", None))
        if tmodel is not None:
            s = _med(table, "torch loop, no_grad, train mode (2 threads)") / _med(
                table, "dl.mc.sample (jit, vmap over keys)"
            )
            targets.append(_target(f"MC T={t_count}: torch loop / dl.mc.sample", s, ">= 2", s >= 2))
    return {"tables": tables, "targets": targets}


# ----------------------------------------------------------------------------------


def eval_forward(quick: bool) -> dict:
    from lab.model import MLP
    from lab.predict import compile_forward

    hidden = (128, 128) if quick else (1024, 1024)
    features = 64 if quick else 784
    model = MLP(hidden=hidden, out_features=10, variant="inverted")
    params = model.init(jax.random.key(0), jnp.ones((1, features)))
    fwd = lambda p, x: model.apply(p, x, 0.5, deterministic=True)  # noqa: E731
    tables, targets = [], []
    for rows in [64] if quick else [256, 1024, 4096]:
        x = jax.random.normal(jax.random.key(1), (rows, features), jnp.float32)
        default = jax.jit(fwd).lower(params, x).compile()
        fixed = compile_forward(fwd, params, x)
        c = {
            "default XLA flags": lambda f=default, x=x: f(params, x),
            "individual_dot (lab compile_forward)": (lambda f=fixed, x=x: f(params, x)),
        }
        res = H.compare(c, repeats=3 if quick else 5, calls=1 if rows >= 4096 else 3)
        table = {
            "title": f"eval forward, MLP {features}-{'-'.join(map(str, hidden))}-10, {rows} rows",
            "results": res,
            "base": "default XLA flags",
            "rows": rows,
        }
        tables.append(table)
        s = _med(table, "default XLA flags") / _med(table, "individual_dot (lab compile_forward)")
        targets.append(
            _target(
                f"eval forward {rows} rows: default / with fix",
                s,
                ">= 0.9 (fix never slower)",
                s >= 0.9,
            )
        )
    return {"tables": tables, "targets": targets}


SUITES = {
    "forward": forward,
    "forward_backward": forward_backward,
    "residuals": residuals,
    "train_step": train_step,
    "mc": mc,
    "eval_forward": eval_forward,
    "attention": attention_suite.attention,
}

"""Attention dropout: dropout_lab.attention against Flax linen and jax.nn (issue #16, item 7).

    python benchmarks/attention.py            # the full table (a few minutes on 2 cores)
    python benchmarks/attention.py --quick    # tiny sizes
    python benchmarks/run.py --only attention # the same suite inside `make bench`

fwd+bwd: one jitted ``value_and_grad`` of ``sum(attention(q, k, v) * c)`` with respect to
q, k and v, timed by ``_harness.compare``; memory: the compiled program's temporary
bytes (``compile().memory_analysis().temp_size_in_bytes``, arguments and outputs not
included). Contenders: Flax linen's ``dot_product_attention`` with dropout (its
default ``broadcast_dropout=True``), ours with the same rate, ours at rate 0 and
``jax.nn.dot_product_attention`` (no dropout). Then one training step of a transformer
block (LayerNorm, ``nn.MultiHeadDotProductAttention`` with attention dropout, MLP,
adam): Flax's attention function against ours as its ``attention_fn``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import _harness as H
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dropout_lab import attention as A

RATE = 0.1
FLAX = f"flax linen dot_product_attention (rate {RATE})"
OURS = f"ours dl.attention.dot_product_attention (rate {RATE})"
OURS_0 = "ours, rate 0"
JAX_NN = "jax.nn.dot_product_attention (no dropout)"
OURS_FN = A.dot_product_attention
SHORT = {FLAX: "flax", OURS: "ours", OURS_0: "ours rate 0", JAX_NN: "jax.nn"}
MiB = 1 << 20


def _shapes(quick: bool) -> list[tuple[int, int, int, int]]:
    """``(batch, length, heads, head_dim)`` per table."""
    if quick:
        return [(1, 64, 2, 16)]
    return [(1, length, 4, 64) for length in (256, 1024, 4096)]


def _reps(length: int, quick: bool) -> tuple[int, int]:
    if quick:
        return 3, 2
    return {256: (7, 3), 1024: (5, 1)}.get(length, (3, 1))


def _fwd_bwd(attention_fn, q, k, v, c):
    """The compiled ``value_and_grad`` of ``sum(attention_fn(q, k, v) * c)`` in q, k, v."""

    def loss(q, k, v):
        return jnp.sum(attention_fn(q, k, v) * c)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()


def _contenders() -> dict:
    rng = jax.random.key(1)
    return {
        FLAX: functools.partial(nn.dot_product_attention, dropout_rng=rng, dropout_rate=RATE),
        OURS: functools.partial(A.dot_product_attention, dropout_rng=rng, dropout_rate=RATE),
        OURS_0: A.dot_product_attention,
        JAX_NN: jax.nn.dot_product_attention,
    }


def _attention_table(shape: tuple[int, int, int, int], quick: bool) -> dict:
    batch, length, heads, dim = shape
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, c = (jax.random.normal(kk, (batch, length, heads, dim)) for kk in keys)
    compiled, temp = {}, {}
    for name, fn in _contenders().items():
        compiled[name] = _fwd_bwd(fn, q, k, v, c)
        temp[name] = compiled[name].memory_analysis().temp_size_in_bytes
    reps, calls = _reps(length, quick)
    contenders = {name: (lambda f=f: f(q, k, v)) for name, f in compiled.items()}
    res = H.compare(contenders, repeats=reps, calls=calls, warmup=1)
    mem = ", ".join(f"{SHORT[n]} {temp[n] / MiB:.1f}" for n in temp)
    return {
        "title": (
            f"attention fwd+bwd, batch {batch}, length {length}, {heads} heads, head_dim {dim}, "
            f"rate {RATE} (temp MiB: {mem})"
        ),
        "length": length,
        "shape": list(shape),
        "results": res,
        "temp_bytes": temp,
        "base": JAX_NN,
        "vs": FLAX,
    }


def _attention_targets(table: dict, quick: bool) -> list[dict]:
    length, temp, res = table["length"], table["temp_bytes"], table["results"]
    speed = res[FLAX]["median_ms"] / res[OURS]["median_ms"]
    memory = temp[FLAX] / max(temp[OURS], 1)
    vs_rate0 = temp[OURS] / max(temp[OURS_0], 1)
    # The goals: speed from length 1024 up, memory at 4096; elsewhere reference.
    time_goal = not quick and length >= 1024
    memory_goal = not quick and length >= 4096
    tag = f"L={length}, rate {RATE}"
    return [
        _target(f"{tag}: fwd+bwd time flax / ours", speed, ">= 1.0", time_goal, speed >= 1.0),
        _target(f"{tag}: temp memory flax / ours", memory, ">= 8", memory_goal, memory >= 8),
        _target(
            f"{tag}: temp memory ours / ours at rate 0",
            vs_rate0,
            "<= 1.5",
            memory_goal,
            vs_rate0 <= 1.5,
        ),
    ]


def _target(what: str, measured: float, goal: str, has_goal: bool, met: bool) -> dict:
    """A measured ratio; ``met`` is ``None`` (a reference figure) where no goal applies."""
    return {
        "target": what,
        "measured": round(float(measured), 3),
        "goal": goal if has_goal else f"reference ({goal} where the issue sets it)",
        "met": bool(met) if has_goal else None,
    }


class Block(nn.Module):
    """Pre-LayerNorm transformer block; attention dropout through ``attention_fn``."""

    heads: int
    attention_fn: object

    @nn.compact
    def __call__(self, x):
        attn = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dropout_rate=RATE, attention_fn=self.attention_fn
        )
        x = x + attn(nn.LayerNorm()(x), deterministic=False)
        h = nn.gelu(nn.Dense(4 * x.shape[-1])(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1])(h)


def _train_table(quick: bool) -> tuple[dict, list[dict]]:
    batch, length, features, heads = (2, 32, 32, 2) if quick else (2, 1024, 256, 4)
    x = jax.random.normal(jax.random.key(0), (batch, length, features))
    opt = optax.adam(1e-3)
    compiled, temp, holders = {}, {}, {}
    for name, fn in {"flax attention_fn": nn.dot_product_attention, "ours": OURS_FN}.items():
        model = Block(heads, fn)
        params = model.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, x)

        def step(params, state, key, model=model):
            def loss(p):
                return jnp.mean(model.apply(p, x, rngs={"dropout": key}) ** 2)

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value

        state = opt.init(params)
        compiled[name] = jax.jit(step).lower(params, state, jax.random.key(3)).compile()
        temp[name] = compiled[name].memory_analysis().temp_size_in_bytes
        holders[name] = (params, state)
    key = jax.random.key(3)
    contenders = {n: (lambda n=n: compiled[n](*holders[n], key)[2]) for n in compiled}
    res = H.compare(contenders, repeats=3 if quick else 5, calls=2 if quick else 1, warmup=1)
    table = {
        "title": (
            f"transformer block train step (adam), batch {batch}, length {length}, "
            f"{features} features, {heads} heads, attention dropout {RATE} (temp MiB: "
            + ", ".join(f"{n} {temp[n] / MiB:.1f}" for n in temp)
            + ")"
        ),
        "results": res,
        "temp_bytes": temp,
        "base": "flax attention_fn",
    }
    speed = res["flax attention_fn"]["median_ms"] / res["ours"]["median_ms"]
    memory = temp["flax attention_fn"] / max(temp["ours"], 1)
    targets = [
        {"target": "train step: time flax / ours", "measured": round(speed, 3)},
        {"target": "train step: temp memory flax / ours", "measured": round(memory, 3)},
    ]
    return table, [{**t, "goal": "reference", "met": None} for t in targets]


def attention(quick: bool) -> dict:
    """The suite: one table per sequence length, then the transformer step."""
    tables, targets = [], []
    for shape in _shapes(quick):
        table = _attention_table(shape, quick)
        tables.append(table)
        targets += _attention_targets(table, quick)
    table, more = _train_table(quick)
    return {"tables": [*tables, table], "targets": targets + more}


def markdown(result: dict) -> str:
    """The docs table: time and temporary memory per contender and length."""
    lines = [
        "| length | contender | fwd+bwd ms (median) | temp MiB |",
        "|---:|---|---:|---:|",
    ]
    for table in result["tables"]:
        label = table.get("length", "train step")
        for name, stats in table["results"].items():
            mib = table["temp_bytes"][name] / MiB
            lines.append(f"| {label} | {name} | {stats['median_ms']:.1f} | {mib:.1f} |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---|---|"]
    for t in result["targets"]:
        met = "-" if t["met"] is None else "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = attention(args.quick)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Timing harness shared by the benchmark suites.

Method (the same in every suite): every contender is compiled and warmed up first;
then all contenders of one comparison are timed in one process, interleaved, with
their order rotated on every repeat; each timed call blocks until its result is
ready. We report the median and the minimum per call and the minor page faults per
call (fresh XLA buffers above ~32 MiB are page-faulted on every call on Linux).
"""

from __future__ import annotations

import os

# Torch's OpenMP threads spin-wait by default and stalled 4-8 ms per op on our 2-vCPU
# VMs; this must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

TORCH_THREADS = 2


def load_torch():
    """``torch`` with 2 threads, or ``None`` when it is not installed (or is disabled)."""
    if os.environ.get("DROPOUT_LAB_BENCH_NO_TORCH"):
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(TORCH_THREADS)
    return torch


def block(out):
    """Waits for a JAX result (no-op for numpy and torch, which are synchronous)."""
    leaves = jax.tree.leaves(out)
    for leaf in leaves:
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()
    return out


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def compare(
    contenders: dict[str, Callable[[], object]], *, repeats: int, calls: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Times every contender, interleaved; returns ms per call (median, min) and faults."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            block(contenders[name]())
    times: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = contenders[name]
            f0 = _faults()
            t0 = time.perf_counter()
            for _ in range(calls):
                out = fn()
                block(out)
            dt = time.perf_counter() - t0
            times[name].append(dt / calls * 1e3)
            faults[name].append((_faults() - f0) / calls)
            del out
    return {
        n: {
            "median_ms": statistics.median(times[n]),
            "min_ms": min(times[n]),
            "faults_per_call": statistics.median(faults[n]),
            "repeats": repeats,
            "calls": calls,
        }
        for n in names
    }


class Donated:
    """Calls a jitted, donating ``fn(buffer)`` and keeps its result as the next input."""

    def __init__(self, fn: Callable, buffer):
        self.fn = fn
        self.buffer = buffer

    def __call__(self):
        self.buffer = self.fn(self.buffer)
        return self.buffer


def probe(quick: bool = False) -> dict[str, float]:
    """Machine speed: jax 1024x1024 float32 matmul GFLOP/s and numpy ``x*2`` GB/s (64 MiB)."""
    n = 256 if quick else 1024
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    block(mm(a))
    ts = []
    for _ in range(5 if quick else 15):
        t0 = time.perf_counter()
        block(mm(a))
        ts.append(time.perf_counter() - t0)
    x = np.ones((1 << 20) if quick else (16 << 20), np.float32)
    y = np.empty_like(x)
    np.multiply(x, 2, out=y)
    ms = []
    for _ in range(5 if quick else 15):
        t0 = time.perf_counter()
        np.multiply(x, 2, out=y)
        ms.append(time.perf_counter() - t0)
    return {
        "matmul_gflops": 2 * n**3 / statistics.median(ts) / 1e9,
        "memory_gbps": 8 * x.size / statistics.median(ms) / 1e9,
        "matmul_size": n,
        "memory_bytes": 8 * x.size,
        "loadavg_1min": os.getloadavg()[0],
    }


def mlp_mc_pass(params: list, x: jax.Array, rate: float = 0.5) -> Callable[[jax.Array], jax.Array]:
    """One MC dropout pass ``key -> logits`` of an MLP (kernels ``params``) on ``x``:
    ReLU and ``dl.dropout`` after each hidden layer, layer ``i``'s key ``fold_in(key, i)``."""
    import dropout_lab as dl

    def forward(key: jax.Array) -> jax.Array:
        h = x
        for i, w in enumerate(params):
            h = h @ w
            if i < len(params) - 1:
                h = dl.dropout(jax.random.fold_in(key, i), jax.nn.relu(h), rate)
        return h

    return forward

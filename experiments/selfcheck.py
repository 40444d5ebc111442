"""Self-check report: every variant's measured statistics against their expected values.

python experiments/selfcheck.py [--elements N] [--seed S]

For each variant and rate, draws one mask over N elements of a known input and
prints the measured keep fraction, mean and variance next to the values the
method's definition implies, with the z-score of each difference.
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

import dropout_lab as dl
from lab.console import START_OVER, Display


def _row(name, rate, measured, expected, sd):
    z = (measured - expected) / sd if sd > 0 else (0.0 if measured == expected else math.inf)
    return [name, f"{rate:.2f}", f"{measured:.5f}", f"{expected:.5f}", f"{z:+.2f}"]


def _variance_row(name, rate, y, expected):
    """Sample variance with its standard error from the sample's own fourth moment."""
    centered = y - y.mean()
    var = centered.var()
    sd = math.sqrt(max((centered**4).mean() - var**2, 0.0) / y.size)
    return _row(name, rate, var, expected, sd)


def checks(key, n, rates):
    ones = jnp.ones(n)
    normal = jax.random.normal(jax.random.fold_in(key, 1), (n,))
    rows = []
    for rate in rates:
        q = 1 - rate
        y = np.asarray(dl.dropout(key, ones, rate), np.float64)
        rows.append(
            _row("dropout keep fraction", rate, (y != 0).mean(), q, math.sqrt(q * rate / n))
        )
        rows.append(_row("dropout mean (x=1)", rate, y.mean(), 1.0, math.sqrt(rate / q / n)))
        rows.append(_variance_row("dropout variance (x=1)", rate, y, rate / q))
        y = np.asarray(dl.dropout(key, ones, rate, mode="classic"), np.float64)
        rows.append(_row("classic mean (x=1)", rate, y.mean(), q, math.sqrt(q * rate / n)))
        y = np.asarray(dl.gaussian_dropout(key, ones, rate), np.float64)
        var = rate / q
        rows.append(_row("gaussian mean (x=1)", rate, y.mean(), 1.0, math.sqrt(var / n)))
        rows.append(_variance_row("gaussian variance (x=1)", rate, y, var))
        y = np.asarray(dl.alpha_dropout(key, normal, rate), np.float64)
        rows.append(_row("alpha mean (x~N(0,1))", rate, y.mean(), 0.0, 1 / math.sqrt(n)))
        rows.append(_variance_row("alpha variance (x~N(0,1))", rate, y, 1.0))
        w = np.asarray(dl.dropconnect(key, ones, rate), np.float64)
        rows.append(
            _row("dropconnect keep fraction", rate, (w != 0).mean(), q, math.sqrt(q * rate / n))
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 22)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with Display(resume=START_OVER) as display:
        rows = checks(jax.random.key(args.seed), args.elements, (0.1, 0.5, 0.9))
    lines = [f"dropout_lab self-check ({args.elements:,} elements, seed {args.seed})", ""]
    lines += ["| check | rate | measured | expected | z |", "|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    display.table("\n".join(lines))
    worst = max(abs(float(r[-1])) for r in rows)
    display.note(f"largest |z| = {worst:.2f} over {len(rows)} checks (|z| < 5 expected)")
    raise SystemExit(0 if worst < 5 else 1)


if __name__ == "__main__":
    main()

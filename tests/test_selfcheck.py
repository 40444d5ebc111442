import importlib.util
import pathlib

import jax


def test_selfcheck_rows_are_within_five_sigma():
    path = pathlib.Path(__file__).parents[1] / "experiments" / "selfcheck.py"
    spec = importlib.util.spec_from_file_location("selfcheck", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.checks(jax.random.key(0), 1 << 16, (0.3,))
    assert len(rows) == 9
    assert all(abs(float(row[-1])) < 5 for row in rows)

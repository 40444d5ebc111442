"""Compilation settings of the whole test session, for it and every subprocess it starts.

The suite runs thousands of tiny programs on CPU, and XLA:CPU spends most of their time
compiling, so two settings are made here, before anything imports JAX (the environment
variables reach every subprocess too: lab scripts, docs commands, device workers):

- **One persistent compilation cache** (``JAX_COMPILATION_CACHE_DIR``, under the
  system's temporary folder, one per user): a program compiled by one pytest worker, or
  by a subprocess, is read back by the others. The cache is keyed by the program's
  HLO, the compile options and the JAX/XLA version, so a hit is the same executable.
- **A cheaper XLA:CPU back end** (``--xla_backend_optimization_level=0``: LLVM's
  optimizations off; ``--xla_cpu_use_fusion_emitters=false``: the older loop emitters):
  these programs run for milliseconds and compile for seconds; the two flags cut the
  suite's time by about a third. They change neither semantics nor the bits of integer
  work (masks); float results may differ in the last ulp from an optimized build, so a
  comparison of two *different* programs is bounded in ulps, not asserted bit for bit.

Neither applies to ``make bench``, whose timings are the optimized builds'.
"""

import os
import pathlib
import tempfile

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(tempfile.gettempdir()) / f"dropout_lab_test_xla_cache_{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

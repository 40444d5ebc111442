"""Compare dropout methods on one data set.

    python experiments/compare.py configs/compare_digits.yaml [key=value ...]

Overrides are dotted keys, e.g. ``train.epochs=50 methods.rdrop.alpha=0.5
seeds=[0,1,2,3,4]``. Writes the run folder (default ``runs/<config name>``) and
prints the results table. Interrupted runs resume where they stopped.
"""

import sys

from lab import ConfigError, DataError, load_config, run_dir, run_experiment


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    console.print(f"run folder: {run_dir(cfg)}")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not cfg.progress,
    )
    tasks = {}

    def on_start(method, seed, total_steps):
        tasks[method, seed] = progress.add_task(f"{method} seed {seed}", total=total_steps, info="")

    def on_eval(method, seed, step, point):
        metric = " ".join(
            f"{k}={v:.4f}" for k, v in point.items() if k.startswith(("train_loss", "test_"))
        )
        progress.update(
            tasks[method, seed], completed=step, info=f"ep {point['epoch']:.0f} {metric}"
        )

    try:
        with progress:
            out = run_experiment(cfg, on_eval=on_eval, on_start=on_start)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume from the checkpoints.")
        return 130
    console.print(out["table"])
    console.print(f"wrote {run_dir(cfg)}/results.md, metrics.json, config.yaml and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

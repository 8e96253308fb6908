"""Training curves of one or more runs: the loss (EMA) and, where the run has them, validation
NoC@90 by step, plus the paired scores of ``clickmask select`` (its ``scores.json``).

    python -m clickmask.benchmarks.train_curves /work/runs/lite0-v4 --select /work/runs/select/scores.json \\
        --out docs/images/train-v4.png
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np



def _score_label(score: dict) -> str:
    """``lite0-v6`` / ``step-001200`` on two lines (snapshots of several runs share file names), S and the passes."""
    path = pathlib.Path(score["checkpoint"])
    name = f"{path.parent.name}\n{path.stem}" if path.stem.startswith("step-") else path.stem
    passes = score.get("session_options") or {}
    extra = "+".join(k for k, v in sorted(passes.items()) if v)
    return f"{name}\nS={score['size']}" + (f" {extra}" if extra else "")

def read_metrics(run: pathlib.Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(loss_ema by step, validation NoC@90 by step)`` of ``run/metrics.jsonl`` (a resumed run
    may repeat steps: the last record of a step wins)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a 'clickmask train --output' folder?")
    loss: dict[int, float] = {}
    val: dict[int, float] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            val[int(record["step"])] = float(record["val"]["noc90"])
        elif "loss_ema" in record:
            loss[int(record["step"])] = float(record["loss_ema"])
    return sorted(loss.items()), sorted(val.items())


def plot(runs: list[pathlib.Path], select: pathlib.Path | None, out: pathlib.Path) -> None:
    import matplotlib  # noqa: PLC0415 - 'bench' extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = 2 if select else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.0), dpi=110, squeeze=False)
    ax = axes[0][0]
    for run in runs:
        loss, val = read_metrics(run)
        if loss:
            steps, values = zip(*loss)
            ax.plot(steps, values, label=f"{run.name} loss (EMA)")
        if val:
            twin = ax.twinx()
            twin.plot(*zip(*val), "o-", color="tab:red", label=f"{run.name} val NoC@90")
            twin.set_ylabel("validation NoC@90")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (EMA)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    if select:
        scores = json.loads(select.read_text())
        ax2 = axes[0][1]
        labels = [_score_label(s) for s in scores]
        means = [float(np.mean(s["noc90"])) for s in scores]
        ax2.bar(range(len(scores)), means, color="tab:blue")
        # Long checkpoint labels overlap once there are more than a few bars: slant them.
        slant = {"rotation": 30, "ha": "right"} if len(scores) > 3 else {}
        ax2.set_xticks(range(len(scores)), labels, fontsize=8, **slant)
        ax2.set_ylabel(f"validation NoC@90 ({len(scores[0]['noc90'])} objects)")
        for i, m in enumerate(means):
            ax2.text(i, m, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
        ax2.set_title("clickmask select (lower is better)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.train_curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="training output folders")
    parser.add_argument("--select", type=pathlib.Path, default=None, help="scores.json of clickmask select")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    plot(args.runs, args.select, args.out)
    for run in args.runs:
        loss, val = read_metrics(run)
        last = f"step {loss[-1][0]}, loss EMA {loss[-1][1]:.4f}" if loss else "no steps yet"
        print(f"{run}: {last}; {len(val)} validations")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

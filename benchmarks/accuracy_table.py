"""Side-by-side NoC table (ours vs RITM's published numbers) and one mIoU plot from eval JSONs.

    python -m clickmask.benchmarks.accuracy_table benchmarks/results/accuracy/GrabCut.json \
        benchmarks/results/accuracy/Berkeley.json --out benchmarks/results/accuracy/summary

writes ``summary.md`` (the table) and ``summary.png`` (mean IoU after k clicks per dataset).
``--also LABEL JSON...`` adds another model or setting's eval JSONs (same datasets, same order)
as a second row and as dashed curves, e.g. the fast passes beside the default accurate ones.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from clickmask.benchmarks.accuracy import plot_curves

#: NoC@90 published in the RITM paper (Sofiiuk et al., 2021, Table 2/3) and SimpleClick (2022).
PUBLISHED_NOC90 = {
    "RITM HRNet18s (COCO+LVIS)": {"GrabCut": 1.68, "Berkeley": 2.60},
    "RITM HRNet18 (COCO+LVIS)": {"GrabCut": 1.54, "Berkeley": 2.26},
    "SimpleClick ViT-B": {"GrabCut": 1.48, "Berkeley": 1.97},
}


def _row(summaries: list[dict], name: str) -> str:
    cells = []
    for s in summaries:
        curve = s["miou_curve"]
        cells += [f"{s['noc85']:.2f}", f"**{s['noc90']:.2f}**", f"{s['noc95']:.2f}",
                  f"{s['failures90']}/{s['num_samples']}", f"{curve[min(4, len(curve) - 1)]:.3f}"]
    return f"| {name} | {' | '.join(cells)} |"


def table(summaries: list[dict], model_name: str, also: list[tuple[str, list[dict]]] = ()) -> str:
    datasets = [s["dataset"] for s in summaries]
    lines = [f"| model | {' | '.join(f'{d} NoC@85 | {d} NoC@90 | {d} NoC@95 | {d} fail@90 | {d} mIoU@5' for d in datasets)} |",
             "|---|" + "---|" * (5 * len(datasets))]
    lines.append(_row(summaries, model_name))
    for name, others in also:
        if [s["dataset"] for s in others] != datasets:
            raise ValueError(f"--also {name}: its JSONs are {[s['dataset'] for s in others]}, expected {datasets}")
        lines.append(_row(others, name))
    for name, published in PUBLISHED_NOC90.items():
        row = []
        for d in datasets:
            value = published.get(d)
            row += ["-", f"{value:.2f}" if value is not None else "-", "-", "-", "-"]
        lines.append(f"| {name} (published) | {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=pathlib.Path, help="clickmask eval --json outputs")
    parser.add_argument("--model-name", default="clickmask efficientnet-lite0 (shipped)")
    parser.add_argument("--also", nargs="+", action="append", default=[], metavar=("LABEL", "JSON"),
                        help="another row: a label, then its eval JSONs in the same dataset order (repeatable)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="writes OUT.md and OUT.png")
    args = parser.parse_args(argv)
    summaries = [json.loads(path.read_text()) for path in args.json]
    also = []
    for label, *paths in args.also:
        if not paths:
            parser.error(f"--also {label}: give its eval JSONs after the label")
        also.append((label, [json.loads(pathlib.Path(p).read_text()) for p in paths]))
    try:
        text = table(summaries, args.model_name, also)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    curves = summaries
    if also:
        curves = [{**s, "label": f"{s['dataset']}, {args.model_name}"} for s in summaries]
        curves += [{**s, "label": f"{s['dataset']}, {label}", "linestyle": "--"} for label, others in also for s in others]
    title = f"{args.model_name}: mean IoU after k clicks" if not also else "mean IoU after k clicks"
    plot_curves(curves, args.out.with_suffix(".png"), title=title)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

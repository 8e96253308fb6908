"""Annotators a CPU server holds against the clicks they need: one point per served preset.

Reads the capacity of each profile from ``clickmask loadtest --compare ...``'s ``compare.json``
and each preset's validation NoC@90 from a JSON of ``{"presets": {name: {"noc90": ...,
"noc90_whole_objects": ...}}}`` (``benchmarks/results/select/passes-session10.json``), and plots
the two against each other, the default marked. Profiles and presets are matched by name
(``--match PROFILE=PRESET`` for the ones whose names differ).

    python -m clickmask.benchmarks.capacity_curve benchmarks/results/locust-capacity-session10/compare.json \\
        benchmarks/results/select/passes-session10.json --match "default=fast" "session9=session9 (v3 accurate)" \\
        --out docs/images/capacity-curve.png
"""
from __future__ import annotations

import argparse
import json
import pathlib


def points(compare: dict, presets: dict, match: dict[str, str]) -> list[tuple[str, int, float, float]]:
    """(profile, annotators, NoC@90 all, NoC@90 whole objects) for every profile with a preset."""
    out = []
    for profile, users in compare["capacity_users"].items():
        preset = presets.get(match.get(profile, profile))
        if preset is None or not users:
            continue
        out.append((profile, int(users), float(preset["noc90"]), float(preset["noc90_whole_objects"])))
    if not out:
        raise SystemExit("no profile of the compare file has a preset in the NoC file: pass --match PROFILE=PRESET")
    return out


def plot(rows, path: pathlib.Path, default: str, gate_users: int = 40) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, users, noc, whole in rows:
        marker = "*" if name == default else "o"
        ax.scatter([users], [noc], s=160 if name == default else 50, marker=marker, color="tab:blue", zorder=3)
        ax.scatter([users], [whole], s=160 if name == default else 50, marker=marker, color="tab:orange", zorder=3)
        ax.annotate(name + (" (the default)" if name == default and name != "default" else ""), (users, noc), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.scatter([], [], color="tab:blue", label="val-v2 NoC@90, all 305 objects")
    ax.scatter([], [], color="tab:orange", label="val-v2 NoC@90, 165 whole objects")
    ax.axvline(gate_users, color="grey", linestyle="--", linewidth=1)
    ax.text(gate_users, ax.get_ylim()[1], f" {gate_users} annotators", va="top", fontsize=8, color="grey")
    ax.set_xlabel("annotators at p95 <= 300 ms (2-core CPU server, Locust)")
    ax.set_ylabel("clicks to 90% IoU (lower is better)")
    ax.set_title("Served presets: capacity against clicks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("compare", type=pathlib.Path, help="compare.json of clickmask loadtest --compare")
    p.add_argument("presets", type=pathlib.Path, help="JSON with each preset's validation NoC@90")
    p.add_argument("--match", nargs="*", default=[], metavar="PROFILE=PRESET",
                   help="profile names whose preset has another name")
    p.add_argument("--default", default="default", help="the profile to mark as the default (default: %(default)s)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    for path in (args.compare, args.presets):
        if not path.is_file():
            raise SystemExit(f"{path} not found")
    match = dict(m.split("=", 1) for m in args.match if "=" in m)
    rows = points(json.loads(args.compare.read_text()), json.loads(args.presets.read_text())["presets"], match)
    print("| profile | annotators | NoC@90 all | NoC@90 whole objects |\n|---|---|---|---|")
    for name, users, noc, whole in sorted(rows, key=lambda r: -r[1]):
        print(f"| {name} | {users} | {noc:.2f} | {whole:.2f} |")
    plot(rows, args.out, args.default)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

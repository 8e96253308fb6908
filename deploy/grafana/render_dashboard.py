"""Draw the Grafana dashboard's panels with matplotlib from real Prometheus data.

Grafana cannot be installed on the development machines, so this renders the same PromQL as
``dashboards/clickmask.json`` (``query_range`` against a real Prometheus) into one PNG. It is
labelled as such; it is not a Grafana screenshot.

Two modes:

- ``--prometheus http://127.0.0.1:9090 --start UNIX --end UNIX``: render from a running
  Prometheus (any deployment).
- ``--demo``: start the embedded Triton, a client metrics endpoint and a Prometheus (all on
  127.0.0.1, free ports), drive annotators through stepped concurrency, then render.

Example::

    .venv/bin/python deploy/grafana/render_dashboard.py --demo --out docs/images/dashboard-real-run.png
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from clickmask.serving.ports import free_port

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DASHBOARD = HERE / "dashboards" / "clickmask.json"
RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"
DEFAULT_PHASES = ((1, 20.0), (4, 20.0), (8, 20.0), (2, 15.0))  # (annotators, seconds)




def query_range(base_url: str, expr: str, start: float, end: float, step_s: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
    with urllib.request.urlopen(f"{base_url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return " ".join(text.replace("{{model}}", "").split()) or json.dumps(labels)


def render(base_url: str, start: float, end: float, out: pathlib.Path, *, rate_window: str | None,
           step_s: float, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.6 * rows), squeeze=False)
    scale = {"s": (1e3, "ms"), "percentunit": (100.0, "%"), "reqps": (1.0, "per s"), "Bps": (1e-6, "MB/s"),
             "none": (1.0, "")}
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "none")
        factor, unit_label = scale.get(unit, (1.0, unit))
        stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
        lines = []
        for target in panel["targets"]:
            expr = target["expr"]
            if rate_window:
                expr = expr.replace("[1m]", f"[{rate_window}]").replace("[5m]", f"[{rate_window}]")
            if expr.startswith("vector("):
                value = float(expr[len("vector("):-1])
                ax.axhline(value * factor, color="red", linestyle="--", linewidth=1.2, label=target["legendFormat"])
                continue
            for series in query_range(base_url, expr, start, end, step_s):
                t = np.array([float(v[0]) for v in series["values"]]) - start
                y = np.array([float(v[1]) for v in series["values"]]) * factor
                lines.append((legend(target.get("legendFormat", ""), series["metric"]), t, y))
        if stacked and lines:
            grid = np.arange(0.0, end - start + step_s, step_s)
            ys = [np.nan_to_num(np.interp(grid, t, y, left=np.nan, right=np.nan)).clip(min=0) for _, t, y in lines]
            ax.stackplot(grid, *ys, labels=[name for name, _, _ in lines], alpha=0.8)
        else:
            for name, t, y in lines:
                ax.plot(t, y, label=name, linewidth=1.6)
        threshold = panel["fieldConfig"]["defaults"].get("thresholds")
        if threshold and not any(t["expr"].startswith("vector(") for t in panel["targets"]):
            value = threshold["steps"][-1]["value"]
            ax.axhline(value * factor, color="red", linestyle="--", linewidth=1.0, label=f"threshold {value * factor:g} {unit_label}")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(unit_label)
        ax.set_xlabel("seconds into the run")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data (nothing failed)" if "rror" in panel["title"] else "no data",
                    transform=ax.transAxes, ha="center", va="center", color="gray")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{dashboard['title']}: panels of deploy/grafana/dashboards/clickmask.json drawn with matplotlib "
                 f"from a real Prometheus (NOT a Grafana screenshot)\n{subtitle}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def demo(out: pathlib.Path, phases, dataset: pathlib.Path) -> None:
    from prometheus_client import CollectorRegistry

    from clickmask.client import Client
    from clickmask.client.clicker import load_gt, next_click
    from clickmask.client.metrics import ClientMetrics
    from clickmask.imageio import read_mask, read_rgb
    from clickmask.serving.server import ServerConfig, TritonServer, _die_with_parent

    images = sorted((dataset / "images").iterdir())[:16]
    samples = [(read_rgb(p), load_gt(read_mask(dataset / "masks" / f"{p.stem}.png"))) for p in images]
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), startup_timeout_s=300)
    metrics = ClientMetrics(CollectorRegistry())
    client_port = free_port()
    served = metrics.serve(client_port)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-render-"))
    prom_port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES_DIR}/*.yml']\n"
        "scrape_configs:\n"
        f"  - job_name: triton\n    static_configs: [{{targets: ['127.0.0.1:{config.metrics_port}']}}]\n"
        f"  - job_name: clickmask-client\n    static_configs: [{{targets: ['127.0.0.1:{client_port}']}}]\n"
    )
    base_url = f"http://127.0.0.1:{prom_port}"
    with TritonServer(config):
        prom = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        try:
            time.sleep(4)
            stop = threading.Event()
            active = [0]

            def annotator(index: int) -> None:
                with Client(config.grpc_url, metrics=metrics) as client:
                    k = index
                    while not stop.is_set() and index < active[0]:
                        image, (gt, ignore) = samples[k % len(samples)]
                        session = client.session(image)
                        pred = gt & False
                        for _ in range(5):
                            if stop.is_set() or index >= active[0]:
                                return
                            click = next_click(gt, pred, ignore, previous=session.clicks)
                            if click is None:
                                break
                            pred = session.click(x=click.x, y=click.y, positive=click.positive).array
                        k += 7

            start = time.time()
            with concurrent.futures.ThreadPoolExecutor(max(c for c, _ in phases)) as pool:
                running: dict[int, concurrent.futures.Future] = {}
                for concurrency, seconds in phases:
                    active[0] = concurrency
                    for i in range(concurrency):
                        if i not in running or running[i].done():
                            running[i] = pool.submit(annotator, i)
                    print(f"{concurrency} annotators for {seconds:.0f} s", flush=True)
                    time.sleep(seconds)
                stop.set()
            time.sleep(5)
            end = time.time()
            phase_text = ", ".join(f"{c} for {s:.0f} s" for c, s in phases)
            render(base_url, start, end, out, rate_window="15s", step_s=2.0,
                   subtitle=f"Real run on a 2-core CPU VM (shared with a training job): embedded Triton 2.51 + "
                            f"Prometheus 2.42, annotators {phase_text}; rate windows [1m]/[5m] shortened to [15s]")
        finally:
            prom.send_signal(signal.SIGTERM)
            prom.wait(15)
            if isinstance(served, tuple):
                served[0].shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=REPO_ROOT / "docs" / "images" / "dashboard-real-run.png")
    parser.add_argument("--demo", action="store_true", help="start Triton, a client and Prometheus, drive load, render")
    parser.add_argument("--dataset", type=pathlib.Path, default=REPO_ROOT.parent / "shared" / "datasets" / "GrabCut")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, help="unix seconds (default: 30 minutes ago)")
    parser.add_argument("--end", type=float, help="unix seconds (default: now)")
    parser.add_argument("--step", type=float, default=15.0, help="query_range step in seconds")
    args = parser.parse_args()
    if args.demo:
        demo(args.out, DEFAULT_PHASES, args.dataset)
        return
    end = args.end or time.time()
    start = args.start or end - 1800
    render(args.prometheus, start, end, args.out, rate_window=None, step_s=args.step,
           subtitle=f"Prometheus {args.prometheus}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} UTC, "
                    f"{(end - start) / 60:.0f} min")


if __name__ == "__main__":
    main()

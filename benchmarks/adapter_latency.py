"""What the platform adapters add to a click: Label Studio backend and CVAT function vs the client.

One 1-megapixel image (COCO_MVal ``apple04``, a training-set image, resized to 816x1224), the
standard protocol's clicks on its object, over a running clickmask Triton server. Every click
runs three times, interleaved, on three sessions that see the same clicks:

* ``direct``: ``Session.click`` on the gRPC client;
* ``label-studio``: an HTTP ``POST /predict`` to ``clickmask label-studio-backend`` (served by
  waitress on loopback, in this process) with the task and every point so far, as Label Studio
  sends it; the answer carries the brush RLE. ``ls-handler`` is the part inside the backend
  (its ``Server-Timing`` header): the rest is the loopback HTTP hop;
* ``cvat``: the nuclio function ``deploy/cvat/main.py`` through ``nuclio_sdk.test.Platform``
  with the JSON body CVAT sends (the frame as base64 and every point); the answer carries the
  mask rows. nuclio's own HTTP hop is not in it (nuclio cannot run here), nor CVAT's parse of
  the answer (reported apart).

The adapter's cost is the paired difference (adapter - direct) for the same click, p50 and p95
over clicks 2..N of every round (the first click of a task reads or decodes the image and is
reported apart). For CVAT the base64 decode of the re-sent frame is timed on its own: the
function skips it for a frame it has a session for (it hashes the base64 text instead).

Runs in the adapter's environment (label-studio-sdk needs numpy 2):

    .venv/bin/clickmask serve &                     # a Triton server on 127.0.0.1:8001
    .venv-ls/bin/python -m clickmask.benchmarks.adapter_latency --url 127.0.0.1:8001 \\
        --rounds 20 --clicks 5 --out benchmarks/results/adapter-latency.txt
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time

import cv2
import numpy as np
from clickmask.machine import describe as describe_cpu
from clickmask.serving.ports import free_port

BUDGET_MS = 30.0
SAMPLE = "apple04_000000562059"
SIZE_HW = (1224, 816)  # 1.0 MP
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent




def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _load_cvat_function():
    spec = importlib.util.spec_from_file_location("clickmask_cvat_main_bench", REPO_ROOT / "deploy" / "cvat" / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--url", default="127.0.0.1:8001", help="the clickmask Triton server's gRPC HOST:PORT")
    parser.add_argument("--datasets", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("CLICKMASK_DATASETS", REPO_ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--rounds", type=int, default=20, help="fresh sessions (tasks/frames) per path")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per round (standard protocol)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    import nuclio_sdk
    import nuclio_sdk.test
    import requests
    import waitress.server

    from clickmask.client import Client, load_gt, next_click
    from clickmask.web.label_studio import EXAMPLE_LABEL_CONFIG, ImageReader, LabelStudioBackend, create_app

    root = args.datasets / "COCO_MVal"
    image = cv2.imread(str(root / "images" / f"{SAMPLE}.jpg"))
    gt_raw = cv2.imread(str(root / "masks" / f"{SAMPLE}.png"), cv2.IMREAD_GRAYSCALE)
    if image is None or gt_raw is None:
        parser.error(f"cannot read {SAMPLE} under {root}")
    height, width = SIZE_HW
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    gt, ignore = load_gt(cv2.resize(gt_raw, (width, height), interpolation=cv2.INTER_NEAREST))
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    frame_b64 = base64.b64encode(jpeg).decode("ascii")
    files = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-bench-"))
    (files / "img.jpg").write_bytes(jpeg)

    # the clicks: the standard protocol on the direct client, replayed on every path
    client = Client(args.url, timeout_s=30.0)
    probe = client.session(rgb)
    clicks, mask = [], np.zeros_like(gt)
    for _ in range(args.clicks):
        c = next_click(gt, mask, ignore, probe.clicks)
        if c is None:
            break
        clicks.append((c.x, c.y, c.positive))
        mask = probe.click(c.x, c.y, c.positive).array

    # Label Studio backend on a real loopback HTTP server
    backend = LabelStudioBackend(Client(args.url, timeout_s=30.0), ImageReader(local_files_root=files))
    port = free_port()
    server = waitress.server.create_server(create_app(backend), host="127.0.0.1", port=port, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    http = requests.Session()
    ls_url = f"http://127.0.0.1:{port}/predict"
    http.get(f"http://127.0.0.1:{port}/health").raise_for_status()

    def ls_body(task_id: int, upto: int) -> bytes:
        result = [{"id": f"k{i}", "from_name": "point", "to_name": "image", "type": "keypointlabels",
                   "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": p,
                   "value": {"x": (x + 0.5) / width * 100, "y": (y + 0.5) / height * 100, "width": 0.5,
                             "keypointlabels": ["Object"]}} for i, (x, y, p) in enumerate(clicks[:upto])]
        body = {"tasks": [{"id": task_id, "data": {"image": "/data/local-files/?d=img.jpg"}}], "project": "1.1",
                "label_config": EXAMPLE_LABEL_CONFIG, "params": {"context": {"result": result}}}
        return json.dumps(body).encode()

    # CVAT function on nuclio's test platform, against the same server
    os.environ["CLICKMASK_URL"] = args.url
    cvat = _load_cvat_function()
    nuclio = nuclio_sdk.test.Platform()
    contexts = []

    def keep(context):
        if not contexts:
            contexts.append(context)
        return context

    def cvat_body(round_: int, upto: int) -> bytes:
        # a new frame per round (sessions are keyed by the frame's content): the same pixels, with a
        # round tag after the JPEG's end marker (decoders ignore it)
        frame = frame_b64 if round_ == 0 else base64.b64encode(jpeg + round_.to_bytes(4, "big")).decode("ascii")
        return json.dumps({"image": frame,
                           "pos_points": [[x, y] for x, y, p in clicks[:upto] if p],
                           "neg_points": [[x, y] for x, y, p in clicks[:upto] if not p]}).encode()

    times = {"direct": {}, "label-studio": {}, "ls-handler": {}, "cvat": {}}
    cpu_times = {"direct": {}, "ls-handler": {}, "cvat": {}}
    decode_ms, hash_ms, parse_ms = [], [], []
    for round_ in range(args.rounds + 1):  # round 0 warms up every path
        session = client.session(rgb)
        for k in range(1, len(clicks) + 1):
            x, y, p = clicks[k - 1]
            started, cpu = time.perf_counter(), time.thread_time()
            session.click(x, y, p)
            direct = time.perf_counter() - started
            direct_cpu = time.thread_time() - cpu

            body = ls_body(1000 + round_, k)
            started = time.perf_counter()
            response = http.post(ls_url, data=body, headers={"Content-Type": "application/json"})
            response.raise_for_status()
            rle = response.json()["results"][0]["result"][0]["value"]["rle"]
            ls = time.perf_counter() - started
            assert rle
            timing = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
            handler, handler_cpu = float(timing["app"]) / 1e3, float(timing["cpu"]) / 1e3  # inside the backend

            body = cvat_body(round_, k)
            started, cpu = time.perf_counter(), time.thread_time()
            event = nuclio_sdk.Event(body=body, content_type="application/json")
            answer = nuclio.call_handler_with_context_mutation(cvat.handler, event, keep)
            assert answer.status_code == 200, answer.body
            cv = time.perf_counter() - started
            cv_cpu = time.thread_time() - cpu
            started = time.perf_counter()
            json.loads(answer.body)  # what CVAT then spends on the answer's format (reported apart)
            parse_ms.append((time.perf_counter() - started) * 1e3)
            if round_:
                for name, value in (("direct", direct), ("label-studio", ls), ("ls-handler", handler), ("cvat", cv)):
                    times[name].setdefault(k, []).append(value * 1e3)
                for name, value in (("direct", direct_cpu), ("ls-handler", handler_cpu), ("cvat", cv_cpu)):
                    cpu_times[name].setdefault(k, []).append(value * 1e3)
        if round_:
            started = time.perf_counter()
            cv2.imdecode(np.frombuffer(base64.b64decode(frame_b64), np.uint8), cv2.IMREAD_COLOR)
            decode_ms.append((time.perf_counter() - started) * 1e3)
            from clickmask.web.interactive import frame_key

            started = time.perf_counter()
            frame_key(frame_b64, None)
            hash_ms.append((time.perf_counter() - started) * 1e3)
    inferences = contexts[0].user_data.interactor.sessions.inferences
    server.close()

    def rows(name: str, first: bool):
        keys = [1] if first else [k for k in times[name] if k > 1]
        return [v for k in keys for v in times[name][k]]

    def paired(name: str, first: bool):
        keys = [1] if first else [k for k in times[name] if k > 1]
        return [a - b for k in keys for a, b in zip(times[name][k], times["direct"][k])]

    lines = [
        f"adapter latency, {width}x{height} ({width * height / 1e6:.2f} MP) JPEG, {len(clicks)} clicks x "
        f"{args.rounds} rounds, server {args.url}",
        f"machine: {platform.node()}, {describe_cpu()}, python {platform.python_version()}, nice {os.nice(0)}; "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        "",
        f"{'path':<14}{'clicks':>8}{'p50 ms':>9}{'p95 ms':>9}{'added p50':>11}{'added p95':>11}",
    ]
    for first in (False, True):
        label = "2..N" if not first else "1st"
        for name in ("direct", "label-studio", "ls-handler", "cvat"):
            values = rows(name, first)
            added = paired(name, first) if name != "direct" else None
            lines.append(f"{name:<14}{label:>8}{_pct(values, 50):>9.1f}{_pct(values, 95):>9.1f}"
                         + (f"{_pct(added, 50):>11.1f}{_pct(added, 95):>11.1f}" if added else f"{'':>11}{'':>11}"))
    lines += ["", "CPU time of the thread doing the work (not slowed by waiting for a core), clicks 2..N:",
              f"{'path':<14}{'p50 ms':>9}{'added p50':>11}"]
    for name in ("direct", "ls-handler", "cvat"):
        values = [v for k in cpu_times[name] if k > 1 for v in cpu_times[name][k]]
        added = [a - b for k in cpu_times[name] if k > 1 for a, b in zip(cpu_times[name][k], cpu_times["direct"][k])]
        lines.append(f"{name:<14}{_pct(values, 50):>9.1f}" + (f"{_pct(added, 50):>11.1f}" if name != "direct" else ""))
    ls_added = _pct(paired("label-studio", False), 50)
    cvat_added = _pct(paired("cvat", False), 50)
    lines += [
        "",
        f"cvat: base64 decode + JPEG decode of the re-sent {len(frame_b64) / 1e6:.2f} MB frame: "
        f"p50 {statistics.median(decode_ms):.1f} ms (paid on the first click of a frame only); "
        f"hashing the base64 text instead: p50 {statistics.median(hash_ms):.2f} ms a click",
        f"cvat: CVAT's own json parse of the answer's mask rows (not in the table): p50 {statistics.median(parse_ms):.1f} ms",
        f"cvat function: {inferences} inferences for {args.rounds + 1} rounds x {len(clicks)} clicks "
        "(one per click)",
        f"budget: an adapter adds <= {BUDGET_MS:.0f} ms at p50 to clicks 2..N: "
        f"label-studio {ls_added:.1f} ms {'OK' if ls_added <= BUDGET_MS else 'OVER'}, "
        f"cvat {cvat_added:.1f} ms {'OK' if cvat_added <= BUDGET_MS else 'OVER'}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

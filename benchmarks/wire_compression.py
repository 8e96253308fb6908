"""Bytes per click on the wire, with and without gRPC compression, and what it costs in latency.

A loopback TCP proxy sits between ``Client`` and tritonserver's gRPC port and counts every
byte it forwards in each direction: HTTP/2 frames, gRPC headers and messages, i.e. what a
network would carry above TCP (TCP/IP headers are not counted). For each server response
compression level (``--grpc-infer-response-compression-level``, one tritonserver each) and
each client request compression (none, gzip, deflate) the same clicks are sent: a fixed
sequence of 5 clicks on each bundled demo sample (clickmask/web/static/samples). The
connection set-up and the model-info calls are excluded (counted before the first click).
All servers run at once and the configurations take turns pass by pass, so that the load
of the machine drifts over all of them alike; latency is measured on loopback, where
compression only costs CPU, and the last column computes what the bytes would take on a
100 Mbit/s link.

    python -m clickmask.benchmarks.wire_compression [--levels none high] [--out benchmarks/results/wire_compression.md]
    python -m clickmask.benchmarks.wire_compression --url 127.0.0.1:8001   # a running server, its own level
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import platform
import socket
import statistics
import sys
import threading
import time

import numpy as np
from clickmask.machine import describe as describe_cpu
from clickmask.serving.ports import free_port

SAMPLES_DIR = pathlib.Path(__file__).resolve().parent.parent / "clickmask" / "web" / "static" / "samples"
#: Click sequence as fractions of (width, height) and the click's sign.
CLICKS = ((0.50, 0.45, True), (0.45, 0.60, True), (0.10, 0.10, False), (0.55, 0.35, True), (0.90, 0.85, False))
REQUEST_COMPRESSIONS = (None, "gzip", "deflate")
#: Link speed for the computed transfer time column (bytes x 8 / speed; not measured).
LINK_MBIT = 100.0


class CountingProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; count bytes each way (thread-safe, loopback only)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@dataclasses.dataclass
class Row:
    response_level: str
    request_compression: str
    clicks: int
    up_per_click: float
    down_per_click: float
    payload_up: int
    payload_down: int
    latency_p50_ms: float
    latency_mean_ms: float


def load_samples() -> list[np.ndarray]:
    import cv2

    images = []
    for path in sorted(SAMPLES_DIR.glob("*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not images:
        raise SystemExit(f"no sample images in {SAMPLES_DIR}")
    return images


class Config:
    """One (server, request compression) pair behind its own counting proxy."""

    def __init__(self, grpc_url: str, level: str, compression: str | None) -> None:
        from clickmask.client import Client

        host, port = grpc_url.rsplit(":", 1)
        self.level, self.compression = level, compression
        self.proxy = CountingProxy(host, int(port))
        self.client = Client(self.proxy.url, compression=compression, timeout_s=30.0)
        self.latencies: list[float] = []
        self.size = self.client.size  # connection + model info: not counted
        self.client.session(np.zeros((64, 64, 3), np.uint8)).click(x=10, y=10)  # warm
        time.sleep(0.1)
        self.start = self.proxy.counts()

    def run_pass(self, images: list[np.ndarray]) -> None:
        for image in images:
            height, width = image.shape[:2]
            session = self.client.session(image)
            for fx, fy, positive in CLICKS:
                started = time.perf_counter()
                session.click(x=fx * (width - 1), y=fy * (height - 1), positive=positive)
                self.latencies.append(time.perf_counter() - started)

    def row(self) -> Row:
        time.sleep(0.2)  # let the proxy forward the last frames (acks, window updates)
        up, down = self.proxy.counts()
        self.client.close()
        self.proxy.close()
        clicks = len(self.latencies)
        return Row(self.level, self.compression or "none", clicks, (up - self.start[0]) / clicks,
                   (down - self.start[1]) / clicks, 6 * self.size * self.size, self.size * self.size,
                   statistics.median(self.latencies) * 1e3, statistics.fmean(self.latencies) * 1e3)


def measure(configs: list[Config], images: list[np.ndarray], repeat: int) -> list[Row]:
    """Round-robin: each pass runs every configuration once, so load drift hits them alike."""
    for number in range(repeat):
        for config in configs:
            config.run_pass(images)
        print(f"  pass {number + 1}/{repeat} done", file=sys.stderr, flush=True)
    return [config.row() for config in configs]


def table(rows: list[Row]) -> str:
    base = {(r.response_level, r.request_compression): r for r in rows}.get(("none", "none"))
    lines = [
        "| server response compression | client request compression | clicks | bytes/click client→server | "
        "bytes/click server→client | total vs uncompressed | latency p50 ms (loopback) | latency mean ms | "
        f"transfer ms at {LINK_MBIT:g} Mbit/s (computed) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        total = r.up_per_click + r.down_per_click
        ratio = f"{total / (base.up_per_click + base.down_per_click):.0%}" if base else "-"
        transfer_ms = total * 8 / (LINK_MBIT * 1e6) * 1e3
        lines.append(f"| {r.response_level} | {r.request_compression} | {r.clicks} | {r.up_per_click:,.0f} | "
                     f"{r.down_per_click:,.0f} | {ratio} | {r.latency_p50_ms:.1f} | {r.latency_mean_ms:.1f} | "
                     f"{transfer_ms:.0f} |")
    if rows:
        lines.append("")
        lines.append(f"Tensor payload per click (the contract's uint8 tensors at S={int((rows[0].payload_down) ** 0.5)}): "
                     f"{rows[0].payload_up:,} bytes up, {rows[0].payload_down:,} bytes down.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None,
                        help="measure a running server at HOST:PORT (its response level is whatever it was started "
                             "with; give it with --levels) instead of starting one tritonserver per level")
    parser.add_argument("--levels", nargs="+", default=["none", "low", "high"],
                        choices=["none", "low", "medium", "high"], help="server response compression levels")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the samples (5 clicks each)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    images = load_samples()
    if args.url:
        rows = measure([Config(args.url, args.levels[0], c) for c in REQUEST_COMPRESSIONS], images, args.repeat)
    else:
        import contextlib

        from clickmask.serving.server import ServerConfig, TritonServer


        with contextlib.ExitStack() as stack:
            configs = []
            for level in args.levels:  # one tritonserver per level, all up at once
                config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                                      grpc_response_compression=level, startup_timeout_s=180.0)
                print(f"starting tritonserver with response compression {level} ...", file=sys.stderr, flush=True)
                stack.enter_context(TritonServer(config))
                configs += [Config(config.grpc_url, level, c) for c in REQUEST_COMPRESSIONS]
            rows = measure(configs, images, args.repeat)
    text = table(rows)
    print(text)
    if args.out:
        command = "python -m clickmask.benchmarks.wire_compression " + " ".join(argv if argv is not None else sys.argv[1:])
        header = (f"# gRPC bytes per click on the wire\n\nMade by `{command}` on {platform.node()} "
                  f"({describe_cpu()}, {time.strftime('%Y-%m-%d')}): "
                  f"{len(images)} samples x 5 clicks x {args.repeat} passes per row, through a loopback proxy "
                  f"that counts the bytes above TCP (HTTP/2 frames, gRPC headers and messages).\n\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

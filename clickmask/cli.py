"""The ``clickmask`` command line: serve, segment, eval, export, train.

Parsers are built in :func:`build_parser` (never at import time) and heavy modules are
imported inside the command that needs them, so ``clickmask --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import signal
import sys
import threading

from clickmask.client.errors import ClickmaskError

LOGGER = logging.getLogger("clickmask")


def _point(text: str) -> tuple[float, float]:
    try:
        x_text, y_text = text.split(",")
        return float(x_text), float(y_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in pixels (for example 120,80), got {text!r}") from None


class _ClickAction(argparse.Action):
    """Collect --pos/--neg into one ordered list of (x, y, positive)."""

    def __call__(self, parser, namespace, values, option_string=None):
        clicks = list(getattr(namespace, "clicks", None) or [])
        clicks.append((values[0], values[1], option_string == "--pos"))
        namespace.clicks = clicks


# ---------------------------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    from clickmask.serving import server  # light: stdlib only

    p = sub.add_parser("serve", help="start tritonserver with the clickmask model (CPU, embedded default)",
                       description="Start the tritonserver binary of the nvidia-pytriton wheel on the model "
                                   "repository, wait until the model is ready, print the endpoints and serve "
                                   "until Ctrl-C or SIGTERM.")
    p.add_argument("--model-repository", type=pathlib.Path, default=server.DEFAULT_MODEL_REPOSITORY,
                   help="Triton model repository (default: %(default)s)")
    p.add_argument("--host", default=server.DEFAULT_HOST, help="address to bind (default: %(default)s, loopback)")
    p.add_argument("--grpc-port", type=int, default=server.DEFAULT_GRPC_PORT, help="default: %(default)s")
    p.add_argument("--http-port", type=int, default=server.DEFAULT_HTTP_PORT, help="default: %(default)s")
    p.add_argument("--metrics-port", type=int, default=server.DEFAULT_METRICS_PORT, help="default: %(default)s")
    p.add_argument("--log-file", type=pathlib.Path, default=None, help="where the server log goes (default: a temp dir)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    p.add_argument("--verbose-server", action="store_true", help="tritonserver --log-verbose=1")
    p.add_argument("--tls-cert", type=pathlib.Path, default=None, help="serve gRPC over TLS with this PEM certificate")
    p.add_argument("--tls-key", type=pathlib.Path, default=None, help="the PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=pathlib.Path, default=None,
                   help="mutual TLS: accept only clients with a certificate signed by this PEM CA")
    p.add_argument("--admin-key", default=None,
                   help="key for the admin APIs (default: $CLICKMASK_ADMIN_KEY, else a random key, printed)")
    p.add_argument("--lock-down", action="store_true",
                   help="also put model-config and statistics behind the admin key (clients read S from the "
                        "metadata; benchmarks need the key)")
    p.add_argument("--no-restart-on-backend-crash", dest="restart_on_backend_crash", action="store_false",
                   help="do not restart tritonserver when its Python-backend stub process dies")
    p.add_argument("--grpc-response-compression", choices=server.RESPONSE_COMPRESSION_LEVELS, default="none",
                   help="gzip inference responses at this level (default: %(default)s); 103 KB -> 43 KB per "
                        "click at S=320 (any level), see benchmarks/results/wire_compression.md")
    p.add_argument("--frontend-nice", type=int, default=None, metavar="N",
                   help="nice value for tritonserver's own threads once the models are loaded (0..19); the "
                        "backend stubs that run the network keep theirs (default: %d; docs/hostile-load.md)"
                        % server.ServerConfig.frontend_nice)
    p.add_argument("--rate-limit", choices=server.RATE_LIMIT_MODES, default=server.ServerConfig.rate_limit,
                   help="Triton's rate limiter (default: %(default)s: a request goes to the free model instance "
                        "the config's priorities prefer, so the embedded default runs lone clicks in one warm "
                        "process; off: any free instance, they take turns)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    import os

    from clickmask.client.shm import ADMIN_KEY_ENV
    from clickmask.serving.server import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER, ServerConfig, TritonServer

    admin_key = args.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
    config = ServerConfig(
        model_repository=args.model_repository, host=args.host, grpc_port=args.grpc_port,
        http_port=args.http_port, metrics_port=args.metrics_port, startup_timeout_s=args.startup_timeout,
        log_verbose=1 if args.verbose_server else 0, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, admin_key=admin_key, locked_down=args.lock_down,
        grpc_response_compression=args.grpc_response_compression, rate_limit=args.rate_limit,
        **({} if args.frontend_nice is None else {"frontend_nice": args.frontend_nice}),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = TritonServer(config, log_path=args.log_file)
    print(f"starting tritonserver on {config.model_repository} (log: {server.log_path}) ...", flush=True)
    server.start()
    print(f"tritonserver pid {server.pid}", flush=True)
    print("clickmask is ready:", flush=True)
    print(f"  gRPC     {config.grpc_url}{' (TLS)' if config.tls else ''}", flush=True)
    print(f"  HTTP     {config.http_url}", flush=True)
    print(f"  metrics  {config.metrics_url}", flush=True)
    key_text = "(the key you gave)" if admin_key else server.admin_key
    print(f"  admin    {', '.join(config.restricted_apis)} need the header {GRPC_ADMIN_KEY_HEADER} (gRPC) or "
          f"{ADMIN_KEY_HEADER} (HTTP): {key_text}", flush=True)
    print(f"  shm      clients on this machine with {ADMIN_KEY_ENV} set to the admin key send tensors through "
          "shared memory (docs/wire.md)", flush=True)
    print("press Ctrl-C to stop", flush=True)
    if args.restart_on_backend_crash:
        code = server.supervise(stop)
    else:
        code = None
        while not stop.wait(0.5) and code is None:
            code = server.poll()
    if code is not None:
        print(f"tritonserver exited unexpectedly with status {code}:\n{server.relevant_log_lines()}",
              file=sys.stderr)
        return 1
    print("stopping tritonserver ...", flush=True)
    code = server.stop()
    print(f"stopped (status {code})", flush=True)
    return 0


# -------------------------------------------------------------------------------- segment
def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment one object of an image from clicks",
                       description="Send clicks, in the order given, to the server (or to a local ONNX file) "
                                   "and write the final mask as a PNG.")
    p.add_argument("image", type=pathlib.Path, help="RGB image file (JPEG, PNG, ...)")
    p.add_argument("--pos", type=_point, action=_ClickAction, metavar="X,Y", help="positive click (repeatable)")
    p.add_argument("--neg", type=_point, action=_ClickAction, metavar="X,Y", help="negative click (repeatable)")
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address (default: %(default)s)")
    p.add_argument("--onnx", type=pathlib.Path, default=None, help="run this ONNX file in-process instead of a server")
    p.add_argument("-o", "--output", type=pathlib.Path, default=None,
                   help="mask PNG to write (default: IMAGE stem + '_mask.png' in the current folder)")
    p.add_argument("--overlay", type=pathlib.Path, default=None, help="also write the image with mask and clicks")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline per click in seconds")
    p.set_defaults(func=_cmd_segment, clicks=None)


def _cmd_segment(args) -> int:
    from clickmask.client import InvalidInputError
    from clickmask.imageio import draw_overlay, read_rgb

    if not args.clicks:
        raise InvalidInputError("give at least one click: --pos X,Y (and optionally --neg X,Y)")
    image = read_rgb(args.image)
    with _open_predictor(args) as predictor:
        session = predictor.session(image)
        mask = None
        for x, y, positive in args.clicks:
            mask = session.click(x=x, y=y, positive=positive)
    output = args.output or pathlib.Path(f"{args.image.stem}_mask.png")
    output.write_bytes(mask.to_png())
    h, w = mask.array.shape
    print(f"{output}: {w}x{h} mask, {int(mask.array.sum())} object pixels ({mask.array.mean():.1%}), "
          f"{len(args.clicks)} clicks")
    if args.overlay:
        draw_overlay(image, mask.array, session.clicks, args.overlay)
        print(f"{args.overlay}: overlay")
    return 0


class _open_predictor:
    """Context manager: a gRPC Client, or a local ONNX predictor with the same session()."""

    def __init__(self, args):
        self.args = args
        self.client = None

    def __enter__(self):
        if self.args.onnx is not None:
            from clickmask.serving.local import LocalPredictor

            self.client = LocalPredictor(self.args.onnx)
        else:
            from clickmask.client import Client

            self.client = Client(self.args.url, timeout_s=self.args.timeout)
        return self.client

    def __exit__(self, *exc):
        close = getattr(self.client, "close", None)
        if close:
            close()


# ---------------------------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: latency/throughput sweep against real servers")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bench_sub.required = True
    from clickmask.benchmarks import gpu_pack, gpu_run  # stdlib only at import

    gpu_run.add_arguments(bench_sub.add_parser("gpu", help="the prepared GPU run: FP16 numerics, speed, training burst",
                                               description=gpu_run.__doc__.split("\n\n")[0],
                                               epilog="See docs/gpu-run.md."))
    gpu_pack.add_arguments(bench_sub.add_parser("gpu-pack", help="bundle code, checkpoint and data for the GPU run",
                                                description=gpu_pack.__doc__.split("\n\n")[0],
                                                epilog="See docs/gpu-run.md."))
    train = bench_sub.add_parser("gpu-train", help="the GPU-resident training run: --stage, --train, --dry-run",
                                 description="The on-device runner of docs/gpu-train.md; every option after "
                                             "gpu-train goes to 'python -m clickmask.benchmarks.gpu_train'.",
                                 add_help=False)
    train.set_defaults(func=lambda args: _bench_gpu_train([]))  # main() forwards the options before parsing
    try:
        from clickmask.benchmarks import latency
    except ImportError as exc:  # pragma: no cover - 'bench' extra missing
        LOGGER.debug("latency benchmark unavailable: %s", exc)
        return
    latency.add_arguments(bench_sub.add_parser("latency", help="closed-loop latency sweep (table + plot)",
                                               description=latency.__doc__.split("\n\n")[0]))


def _bench_gpu_train(options: list[str]) -> int:
    from clickmask.benchmarks import gpu_train  # noqa: PLC0415 - torch on this path only

    return gpu_train.main(options or ["--help"])


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clickmask", description="Interactive segmentation served by Triton.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_serve(sub)
    _add_segment(sub)
    _add_bench(sub)
    for module_name, function_name in (
        ("clickmask.benchmarks.eval_cli", "add_eval_parser"),
        ("clickmask.export.cli", "add_export_parser"),
        ("clickmask.export.cli", "add_train_parser"),
        ("clickmask.export.cli", "add_average_parser"),
        ("clickmask.export.select", "add_select_parser"),
        ("clickmask.benchmarks.loadtest", "add_loadtest_parser"),
        ("clickmask.quality.sim", "add_quality_parser"),
        ("clickmask.web.demo", "add_demo_parser"),
        ("clickmask.web.label_studio", "add_label_studio_parser"),
        ("clickmask.duts", "add_data_parser"),
    ):
        try:
            module = __import__(module_name, fromlist=[function_name])
        except ImportError as exc:  # an extra is not installed: keep the rest of the CLI usable
            LOGGER.debug("%s unavailable: %s", module_name, exc)
            continue
        if hasattr(module, function_name):
            getattr(module, function_name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["bench", "gpu-train"]:  # the runner has its own parser: hand it every option
        return _bench_gpu_train(argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ClickmaskError as exc:
        print(f"clickmask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"clickmask {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

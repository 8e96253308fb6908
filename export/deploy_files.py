"""The tritonserver command line of every deploy file, generated from the same code as the
embedded server's (:func:`clickmask.serving.server.security_args`), so ``deploy/compose.yaml`` and the
Kubernetes deployment are as locked down as ``clickmask serve``:

- model control ``none`` (no loading or unloading over the API);
- the admin APIs (model repository, shared memory, trace, logging) answer only requests that
  carry the admin key header, over gRPC and HTTP; health, metadata, config and inference stay open;
- gRPC over TLS, with the certificate and key mounted at ``/tls``;
- strict readiness, exit on error, Prometheus metrics with latency summaries.

The batching and queue policy live in the generated model configs (``clickmask export
repository``). ``tests/unit/test_deploy.py`` checks that the committed files hold exactly what
:func:`triton_command` returns; ``clickmask export deploy-args TARGET`` prints it.
"""
from __future__ import annotations

import argparse
import json

from clickmask.serving.server import ADMIN_APIS, SUMMARY_QUANTILES, security_args

TARGETS = ("compose", "kubernetes")
TLS_DIR = "/tls"
ADMIN_KEY_ENV = "CLICKMASK_ADMIN_KEY"
#: How each target expands the admin key from the environment (the key never sits in a file).
ADMIN_KEY_REFERENCE = {
    "compose": "${CLICKMASK_ADMIN_KEY:?set CLICKMASK_ADMIN_KEY to a secret of 16+ characters}",
    "kubernetes": "$(CLICKMASK_ADMIN_KEY)",
}


def triton_command(target: str) -> list[str]:
    """``tritonserver`` and its flags for ``target`` (ports are Triton's defaults 8000/8001/8002)."""
    if target not in TARGETS:
        raise ValueError(f"unknown deploy target {target!r}; use one of {', '.join(TARGETS)}")
    return [
        "tritonserver",
        "--model-repository=/models",
        "--model-control-mode=none",
        "--rate-limit=execution_count",  # the embedded config's instance priorities (model_config.py)
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        f"--metrics-config=summary_quantiles={SUMMARY_QUANTILES}",
        "--log-verbose=0",
        *security_args(ADMIN_APIS, ADMIN_KEY_REFERENCE[target], f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key"),
    ]


def add_deploy_args_parser(sub) -> None:
    p = sub.add_parser("deploy-args", help="print the tritonserver command of a deploy file (JSON list)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=TARGETS)
    p.set_defaults(func=lambda args: print(json.dumps(triton_command(args.target), indent=2)) or 0)

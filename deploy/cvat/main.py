"""CVAT interactor function (nuclio): clickmask over a clickmask Triton server.

``init_context`` makes the gRPC client (``CLICKMASK_URL``; over TLS with ``CLICKMASK_SSL=1``
and ``CLICKMASK_ROOT_CERTIFICATES=/path/ca.pem``) and the per-frame session cache
once per worker; ``handler`` answers one CVAT call: ``{image, pos_points, neg_points,
obj_bbox?, threshold?}`` -> ``{"mask": [[0|1, ...], ...], "bounds": [x1, y1, x2, y2]}``.
The logic lives in :mod:`clickmask.web.cvat`; see docs/integrations.md.
"""
import os

from clickmask.client import Client
from clickmask.web.cvat import CvatInteractor
from clickmask.web.session_cache import SessionCache


def init_context(context):
    url = os.environ.get("CLICKMASK_URL", "127.0.0.1:8001")
    client = Client(url, timeout_s=float(os.environ.get("CLICKMASK_TIMEOUT_S", "10")),
                    ssl=os.environ.get("CLICKMASK_SSL", "").lower() in ("1", "true", "yes"),
                    root_certificates=os.environ.get("CLICKMASK_ROOT_CERTIFICATES") or None)
    cache = SessionCache(int(os.environ.get("CLICKMASK_CACHE_SIZE", "64")),
                         float(os.environ.get("CLICKMASK_CACHE_TTL_S", "900")))
    context.user_data.interactor = CvatInteractor(client, cache)
    ready = client.is_ready()
    context.logger.info_with("clickmask interactor ready" if ready else
                             "clickmask server not ready yet: calls fail with 503 until it is", url=url)


def handler(context, event):
    status, body = context.user_data.interactor.handle(event.body)
    return context.Response(body=body, headers={}, content_type="application/json", status_code=status)

"""Label Studio ML backend over the clickmask client: ``clickmask label-studio-backend``.

Label Studio calls an ML backend over HTTP (``GET /health``, ``POST /setup``, ``POST /predict``,
``POST /webhook``). For interactive labeling (smart tools) it sends, with every click, the
whole task and every smart region the annotator placed so far in ``params.context.result``:
``keypointlabels`` points (``x``/``y`` in percent of ``original_width``/``original_height``,
``is_positive``) and optionally a ``rectanglelabels`` box. This backend keeps one clickmask
session per project, task and image (:mod:`clickmask.web.interactive`), so the second click
of a task is one inference on a fixed-size crop, not a fresh session, and answers one
``brushlabels`` region in Label Studio's brush RLE (encoded by ``label-studio-sdk``'s
``label_studio_sdk.converter.brush``).

Task images are read from Label Studio (uploaded files, ``/data/upload/...``; local-files
storage, ``/data/local-files/?d=...``, also straight from disk with ``--local-files-root``) with
the API token of ``--label-studio-api-key`` / ``$LABEL_STUDIO_API_KEY``, which is sent to the
``--label-studio-url`` / ``$LABEL_STUDIO_URL`` origin and nowhere else.

``label-studio-sdk`` 2.x needs numpy >= 2.2 while the server side (nvidia-pytriton) pins
numpy < 2, so this adapter runs in its own environment (``make venv-ls``: ``.venv-ls`` with
``clickmask[label-studio]``); ``.venv/bin/clickmask label-studio-backend`` hands over to it.
This module imports Flask, requests and the SDK only when the service starts, so the CLI can
register the command in any environment. See docs/integrations.md.
"""
from __future__ import annotations

import base64
import logging
import math
import os
import pathlib
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import numpy as np

from clickmask.client.errors import ClickmaskError

from .interactive import AdapterError, InteractiveSessions, decode_image, error_status
from .session_cache import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S, SessionCache

LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090
DEFAULT_TRITON_URL = "127.0.0.1:8001"
#: Largest image download accepted (bytes).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: The environment the Makefile builds for this adapter (``make venv-ls``).
ADAPTER_VENV = ".venv-ls"
_HANDOFF_ENV = "CLICKMASK_LS_HANDOFF"

#: A labeling config that works with this backend (docs/integrations.md explains it).
EXAMPLE_LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="Object" background="#ff0000"/>
  </BrushLabels>
  <KeyPointLabels name="point" toName="image" smart="true" strokeWidth="4">
    <Label value="Object" smart="true" background="#00b4ff" showInline="true"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Object" smart="true" background="#00b4ff" showInline="true"/>
  </RectangleLabels>
</View>"""


# ----------------------------------------------------------------------------- labeling config
@dataclass(frozen=True)
class Tag:
    kind: str  # "Image", "BrushLabels", "KeyPointLabels", "RectangleLabels"
    name: str
    to_name: str = ""
    value: str = ""  # Image: "$image"
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelConfig:
    """The tags of a Label Studio labeling config that this backend reads."""

    images: dict[str, Tag] = field(default_factory=dict)
    brushes: tuple[Tag, ...] = ()
    smart: dict[str, Tag] = field(default_factory=dict)  # KeyPointLabels / RectangleLabels by name

    @classmethod
    def parse(cls, text: str) -> "LabelConfig":
        if not isinstance(text, str) or not text.strip():
            raise AdapterError("the request carries no labeling config (label_config is empty)")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise AdapterError(f"the labeling config is not valid XML: {exc}") from None
        images, brushes, smart = {}, [], {}
        for element in root.iter():
            kind = element.tag
            name = element.get("name", "")
            if kind not in ("Image", "BrushLabels", "KeyPointLabels", "RectangleLabels") or not name:
                continue
            labels = tuple(child.get("value", "") for child in element.iter("Label") if child.get("value"))
            tag = Tag(kind, name, element.get("toName", ""), element.get("value", ""), labels)
            if kind == "Image":
                images[name] = tag
            elif kind == "BrushLabels":
                brushes.append(tag)
            else:
                smart[name] = tag
        return cls(images, tuple(brushes), smart)

    def check(self) -> None:
        """Raise AdapterError when the config cannot work with this backend."""
        if not self.images:
            raise AdapterError("the labeling config has no <Image> tag; see docs/integrations.md for a config")
        if not self.brushes:
            raise AdapterError("the labeling config has no <BrushLabels> tag: clickmask answers brush masks; "
                               "add <BrushLabels name=\"mask\" toName=\"image\"> (docs/integrations.md)")
        if not self.smart:
            raise AdapterError("the labeling config has no smart <KeyPointLabels> or <RectangleLabels> tag "
                               "to click with; add <KeyPointLabels name=\"point\" toName=\"image\" smart=\"true\">")

    def brush_for(self, image_name: str) -> Tag:
        for tag in self.brushes:
            if tag.to_name == image_name:
                return tag
        raise AdapterError(f"the labeling config has no <BrushLabels> tag with toName=\"{image_name}\"; "
                           "clickmask answers brush masks")


# ----------------------------------------------------------------------------- task images
def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class ImageReader:
    """Reads task images: uploaded files and local-files storage through Label Studio, local
    files straight from disk when ``local_files_root`` is given, other http(s) URLs without
    credentials. The API token is sent only to ``label_studio_url``'s origin."""

    def __init__(self, label_studio_url: str | None = None, api_key: str | None = None,
                 local_files_root: str | os.PathLike | None = None, timeout_s: float = 30.0) -> None:
        self.label_studio_url = label_studio_url.rstrip("/") + "/" if label_studio_url else None
        self.api_key = api_key or None
        self.local_files_root = pathlib.Path(local_files_root).resolve() if local_files_root else None
        self.timeout_s = timeout_s
        self._access: tuple[str, float] | None = None  # personal access token: (access token, expiry)
        self._lock = threading.Lock()
        import requests  # the label-studio extra brings it

        self._http = requests.Session()
        self._http.trust_env = False  # no proxies from the environment for the token's host

    # -- credentials
    def _is_label_studio(self, url: str) -> bool:
        return self.label_studio_url is not None and _origin(url) == _origin(self.label_studio_url)

    def _auth_header(self, refresh: bool = False) -> dict[str, str]:
        """``Token <key>`` for a legacy token; for a personal access token (a JWT refresh
        token), ``Bearer <access>`` after exchanging it at ``/api/token/refresh``."""
        key = self.api_key
        if not key:
            return {}
        if key.count(".") != 2:
            return {"Authorization": f"Token {key}"}
        with self._lock:
            if refresh or self._access is None or self._access[1] < time.monotonic():
                response = self._http.post(urljoin(self.label_studio_url, "api/token/refresh"),
                                           json={"refresh": key}, timeout=self.timeout_s, allow_redirects=False)
                if response.status_code != 200:
                    raise AdapterError(f"Label Studio refused the personal access token (HTTP "
                                       f"{response.status_code} from /api/token/refresh): check "
                                       "--label-studio-api-key / LABEL_STUDIO_API_KEY", status=502)
                self._access = (response.json()["access"], time.monotonic() + 240.0)
            return {"Authorization": f"Bearer {self._access[0]}"}

    # -- reading
    def read(self, url: str) -> np.ndarray:
        """The image at a task's URL as HxWx3 uint8 RGB."""
        if not isinstance(url, str) or not url:
            raise AdapterError(f"the task has no image URL (got {url!r})", status=422)
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            if ";base64" not in head:
                raise AdapterError("a data: URL image must be base64 encoded", status=422)
            return decode_image(base64.b64decode(payload), url[:40])
        local = self._local_path(url)
        if local is not None:
            try:
                return decode_image(local.read_bytes(), str(local))
            except OSError as exc:
                raise AdapterError(f"cannot read the local file {local}: {exc.strerror}", status=422) from None
        if url.startswith("/"):
            if self.label_studio_url is None:
                raise AdapterError(
                    f"the task image {url} is served by Label Studio: start the backend with --label-studio-url "
                    "(or LABEL_STUDIO_URL) and --label-studio-api-key (or LABEL_STUDIO_API_KEY)", status=422)
            url = urljoin(self.label_studio_url, url.lstrip("/"))
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise AdapterError(f"cannot read the task image {url[:120]}: the {scheme or 'empty'} scheme is not "
                               "supported (uploaded files, local-files storage and http(s) URLs are)", status=422)
        return decode_image(self._download(url), url)

    def _local_path(self, url: str) -> pathlib.Path | None:
        parts = urlsplit(url)
        if self.local_files_root is None or not parts.path.endswith("/data/local-files/"):
            return None
        if parts.netloc and not self._is_label_studio(url):
            return None
        relative = parse_qs(parts.query).get("d", [""])[0]
        path = (self.local_files_root / relative).resolve()
        if self.local_files_root not in path.parents:
            raise AdapterError(f"the local file {relative!r} is outside --local-files-root", status=422)
        return path

    def _download(self, url: str) -> bytes:
        import requests

        own = self._is_label_studio(url)
        for attempt in (0, 1):
            headers = self._auth_header(refresh=attempt == 1) if own else {}
            try:
                # requests drops the Authorization header when a redirect leaves the host
                response = self._http.get(url, headers=headers, timeout=self.timeout_s, stream=True)
            except requests.RequestException as exc:
                raise AdapterError(f"cannot download the task image {url}: {exc}", status=502) from None
            if own and response.status_code == 401 and attempt == 0 and self.api_key and self.api_key.count(".") == 2:
                continue  # an expired access token: refresh once
            break
        with response:
            final = urlsplit(response.url).path
            if own and (response.status_code in (401, 403) or final.startswith("/user/login")):
                hint = ("pass --label-studio-api-key (or LABEL_STUDIO_API_KEY)" if not self.api_key
                        else "check the API token (legacy tokens must be enabled for the organization)")
                raise AdapterError(f"Label Studio refused the image download {url} (HTTP {response.status_code}): "
                                   f"{hint}", status=502)
            if response.status_code != 200:
                raise AdapterError(f"cannot download the task image {url}: HTTP {response.status_code}", status=502)
            chunks, size = [], 0
            for chunk in response.iter_content(1 << 16):
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise AdapterError(f"the task image {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB", status=422)
                chunks.append(chunk)
        return b"".join(chunks)


# ----------------------------------------------------------------------------- brush RLE
def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an HxW bool mask (RGBA, every channel 0 or 255), by
    ``label_studio_sdk.converter.brush.encode_rle``: the same bytes as its ``mask2rle``,
    which builds the four channels with a slower ``np.repeat``."""
    from label_studio_sdk.converter import brush

    flat = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    rgba = (flat.astype(np.uint32) * np.uint32(0xFFFFFFFF)).view(np.uint8)
    return list(brush.encode_rle(rgba))  # already Python ints (its bits2byte)


# ----------------------------------------------------------------------------- the service
@dataclass
class _Click:
    x: float
    y: float
    positive: bool


class LabelStudioBackend:
    """The ML backend's logic, independent of the web framework.

    Args:
        predictor: the model (``clickmask.client.Client`` or any ``Predictor``).
        reader: how task images are read (default: no Label Studio URL, no token).
        cache: the session cache (default: 64 sessions, 15 minutes idle).
    """

    def __init__(self, predictor, reader: ImageReader | None = None, cache: SessionCache | None = None,
                 model_version: str | None = None) -> None:
        self.predictor = predictor
        self.reader = reader if reader is not None else ImageReader()
        self.sessions = InteractiveSessions(predictor, cache if cache is not None else SessionCache())
        self._model_version = model_version
        self._configs: dict[str, LabelConfig] = {}

    @property
    def model_version(self) -> str:
        if self._model_version is None:
            try:
                info = getattr(self.predictor, "model_info", None)  # a Client: asks the server once
            except ClickmaskError:  # the server is down: say so later, in /predict
                return "clickmask"
            if info is not None:
                version = info.versions[-1] if info.versions else "1"
                self._model_version = f"{info.name}-v{version}-S{info.size}"
            else:
                self._model_version = f"clickmask-S{getattr(self.predictor, 'size', '?')}"
        return self._model_version

    def _config(self, text: str) -> LabelConfig:
        config = self._configs.get(text)
        if config is None:
            config = LabelConfig.parse(text)
            config.check()
            if len(self._configs) > 32:
                self._configs.clear()
            self._configs[text] = config
        return config

    def setup(self, body: dict) -> dict:
        schema = body.get("schema")
        if schema:
            self._config(schema)
        return {"model_version": self.model_version}

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise AdapterError("the request has no tasks")
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        if not isinstance(context, dict) or not context.get("result"):
            raise AdapterError(
                "the request has no params.context.result: clickmask answers interactive requests only "
                "(place a smart keypoint or rectangle with auto-annotation on); to stop these calls when a task "
                "opens, turn off 'Use predictions to prelabel tasks' in the project's annotation settings "
                "(show_collab_predictions)")
        if len(tasks) != 1:
            raise AdapterError(f"an interactive request carries one task, this one has {len(tasks)}")
        config = self._config(body.get("label_config") or "")
        prediction = self._interactive(body.get("project"), tasks[0], context["result"], config)
        return {"results": [prediction], "model_version": self.model_version}

    def _interactive(self, project: Any, task: dict, regions: list, config: LabelConfig) -> dict:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise AdapterError("the task has no data")
        if not isinstance(regions, list):
            raise AdapterError("params.context.result must be a list of regions")
        clicks: list[_Click] = []
        box = None
        image_name = width = height = None
        label = None
        for index, region in enumerate(regions):
            if not isinstance(region, dict):
                raise AdapterError(f"context region {index + 1} is not an object")
            from_name, kind = region.get("from_name"), str(region.get("type", "")).lower()
            tag = config.smart.get(from_name)
            if tag is None:
                known = ", ".join(sorted(config.smart)) or "none"
                raise AdapterError(f"context region {index + 1} comes from the tag {from_name!r}, which is not a "
                                   f"smart KeyPointLabels or RectangleLabels tag of the labeling config "
                                   f"(known: {known})")
            if kind not in ("keypointlabels", "rectanglelabels"):
                raise AdapterError(f"context region {index + 1} has type {kind!r}; clickmask reads keypointlabels "
                                   "and rectanglelabels")
            to_name = region.get("to_name") or tag.to_name
            if to_name not in config.images:
                raise AdapterError(f"context region {index + 1} points to {to_name!r}, which is not an <Image> "
                                   "of the labeling config")
            if image_name not in (None, to_name):
                raise AdapterError("the context regions point to more than one image")
            image_name = to_name
            try:
                w, h = int(region["original_width"]), int(region["original_height"])
            except (KeyError, TypeError, ValueError):
                raise AdapterError(f"context region {index + 1} has no original_width/original_height") from None
            if w <= 0 or h <= 0 or (width is not None and (w, h) != (width, height)):
                raise AdapterError(f"context region {index + 1} states an image of {w}x{h} px, which does not "
                                   "match the other regions")
            width, height = w, h
            value = region.get("value") or {}
            try:
                x, y = float(value["x"]), float(value["y"])
            except (KeyError, TypeError, ValueError):
                raise AdapterError(f"context region {index + 1} has no numeric value.x/value.y") from None
            labels = value.get(kind) or []
            if kind == "keypointlabels":
                _check_percent(x, y, index)
                clicks.append(_Click(x / 100.0 * w, y / 100.0 * h, bool(region.get("is_positive", True))))
            else:
                try:
                    bw, bh = float(value["width"]), float(value["height"])
                except (KeyError, TypeError, ValueError):
                    raise AdapterError(f"context region {index + 1} (a rectangle) has no width/height") from None
                if not all(math.isfinite(v) for v in (x, y, bw, bh)):
                    raise AdapterError(f"context region {index + 1} (a rectangle) has non-finite coordinates")
                box = (x / 100.0 * w, y / 100.0 * h, (x + bw) / 100.0 * w, (y + bh) / 100.0 * h)
            if labels and (label is None or kind == "keypointlabels"):
                label = str(labels[0])

        image_tag = config.images[image_name]
        brush = config.brush_for(image_name)
        if label not in brush.labels:
            label = brush.labels[0] if brush.labels else label
        key_name = image_tag.value.lstrip("$")
        url = task["data"].get(key_name)
        if url is None:
            raise AdapterError(f"the task has no data.{key_name} (the <Image> tag's value {image_tag.value!r})",
                               status=422)
        task_id = task.get("id")
        key = f"ls\0{project}\0{task_id}\0{url}"

        def load() -> np.ndarray:
            image = self.reader.read(url)
            if image.shape[:2] != (height, width):
                raise AdapterError(f"the image {url} is {image.shape[1]}x{image.shape[0]} px but Label Studio "
                                   f"states {width}x{height}", status=422)
            return image

        result = self.sessions.segment(key, load, [(c.x, c.y, c.positive) for c in clicks], box=box,
                                       image_size=(width, height))
        started = time.perf_counter()
        rle = encode_brush_rle(result.mask)
        LOGGER.debug("task %s: %s, %d inference(s), RLE %d bytes in %.1f ms", task_id, result.action,
                     result.inferences, len(rle), (time.perf_counter() - started) * 1e3)
        score = round(result.score, 4)
        region = {
            "id": uuid.uuid4().hex[:10],
            "from_name": brush.name,
            "to_name": image_name,
            "type": "brushlabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": rle, "brushlabels": [label] if label else []},
            "score": score,
            "readonly": False,
        }
        return {"result": [region], "score": score, "model_version": self.model_version}


def _check_percent(x: float, y: float, index: int) -> None:
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AdapterError(f"context region {index + 1} has non-finite coordinates")
    if not (0.0 <= x <= 100.0 and 0.0 <= y <= 100.0):
        raise AdapterError(f"context region {index + 1} at x={x:g}%, y={y:g}% is outside the image "
                           "(coordinates run from 0 to 100 percent)")


# ----------------------------------------------------------------------------- HTTP
def _reason(message: str) -> str:
    """An HTTP reason phrase carrying the message: Label Studio shows ``str(HTTPError)``, which
    holds the status line's reason and not the body."""
    text = " ".join(message.encode("ascii", "replace").decode("ascii").split())
    return text[:300]


def create_app(backend: LabelStudioBackend):
    """The Flask app of the ML backend protocol over ``backend``."""
    from flask import Flask, jsonify, request

    app = Flask("clickmask.label_studio")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

    def error(status: int, message: str):
        response = jsonify({"status": status, "detail": message})
        response.status = f"{status} {_reason(message)}"
        return response

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise AdapterError("the request body must be a JSON object (Content-Type: application/json)")
        return data

    @app.errorhandler(Exception)
    def handle(exc):
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return error(exc.code or 500, exc.description or exc.name)
        status, message = error_status(exc)
        if status >= 500 and not isinstance(exc, (AdapterError, ClickmaskError)):
            LOGGER.exception("unexpected error on %s", request.path)
        else:
            LOGGER.warning("%s %s -> %d: %s", request.method, request.path, status, message)
        return error(status, message)

    @app.get("/")
    @app.get("/health")
    def health():
        return jsonify({"status": "UP", "model_class": "clickmask", "v2": True})

    @app.post("/setup")
    def setup():
        return jsonify(backend.setup(body()))

    @app.post("/predict")
    def predict():
        started, cpu = time.perf_counter(), time.thread_time()
        response = jsonify(backend.predict(body()))
        elapsed_ms = (time.perf_counter() - started) * 1e3
        # wall and CPU time of the handler (the benchmark reads them)
        response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.2f}, cpu;dur={(time.thread_time() - cpu) * 1e3:.2f}"
        LOGGER.info("predict: %.1f ms", elapsed_ms)
        return response

    @app.post("/webhook")
    def webhook():
        data = body()
        return jsonify({"status": "ignored", "action": data.get("action"),
                        "detail": "clickmask does not train from annotations"}), 201

    @app.get("/metrics")
    def metrics():
        cache = backend.sessions.cache
        return jsonify({"sessions": len(cache), "evicted": cache.evicted, "expired": cache.expired,
                        "inferences": backend.sessions.inferences})

    return app


# ----------------------------------------------------------------------------- CLI
def add_label_studio_parser(sub) -> None:
    p = sub.add_parser(
        "label-studio-backend",
        help="Label Studio ML backend: smart keypoints/rectangles -> clickmask brush masks",
        description="Serve Label Studio's ML-backend protocol (GET /health, POST /setup, /predict, /webhook) over "
                    "a clickmask Triton server. Connect it in Label Studio under Settings > Model with "
                    "'Interactive preannotations' on. Runs in the .venv-ls environment (make venv-ls); from "
                    "another environment it hands over to .venv-ls/bin/clickmask. See docs/integrations.md.",
    )
    p.add_argument("--url", default=DEFAULT_TRITON_URL,
                   help="the clickmask Triton server's gRPC HOST:PORT (default: %(default)s)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s, loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    p.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio's URL, to read task images (default: $LABEL_STUDIO_URL)")
    p.add_argument("--label-studio-api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                   help="API token (legacy token or personal access token), sent only to --label-studio-url "
                        "(default: $LABEL_STUDIO_API_KEY)")
    p.add_argument("--local-files-root", default=os.environ.get("LOCAL_FILES_DOCUMENT_ROOT"),
                   help="read /data/local-files/ images from this folder instead of through Label Studio "
                        "(default: $LOCAL_FILES_DOCUMENT_ROOT)")
    p.add_argument("--cache-size", type=int, default=DEFAULT_MAX_ENTRIES,
                   help="sessions kept, the least recently used dropped first (default: %(default)s)")
    p.add_argument("--cache-ttl", type=float, default=DEFAULT_TTL_S, help="seconds an unused session is kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="waitress worker threads (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per model call, retries included (default: %(default)s)")
    p.set_defaults(func=run_label_studio_backend)


def _hand_over() -> None:
    """Exec the adapter's own environment when this one lacks label-studio-sdk: the checkout's
    ``.venv-ls`` (``make venv-ls``), or the virtual environment ``$CLICKMASK_LABEL_STUDIO_VENV``."""
    venv = os.environ.get("CLICKMASK_LABEL_STUDIO_VENV") or pathlib.Path(__file__).resolve().parents[2] / ADAPTER_VENV
    target = pathlib.Path(venv) / "bin" / "clickmask"
    if os.environ.get(_HANDOFF_ENV) or not target.is_file() or pathlib.Path(sys.executable).parent == target.parent:
        raise ClickmaskError(
            "label-studio-sdk is not installed in this environment (it needs numpy>=2.2, which the serve extra "
            f"cannot share): run 'make venv-ls' to build {ADAPTER_VENV} with clickmask[label-studio], or "
            "pip install 'clickmask[label-studio]' in a separate environment")
    LOGGER.info("label-studio-sdk is not importable here; handing over to %s", target)
    os.environ[_HANDOFF_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(str(target), [str(target), *sys.argv[1:]])


def run_label_studio_backend(args) -> int:
    try:
        import flask  # noqa: F401
        import label_studio_sdk.converter.brush  # noqa: F401
        import waitress
    except ImportError:
        _hand_over()
        return 2
    from clickmask.client import Client

    client = Client(args.url, timeout_s=args.timeout)
    if not client.is_ready():
        LOGGER.warning("the clickmask server at %s is not ready yet; clicks fail with HTTP 503 until it is "
                       "(start it with 'clickmask serve')", args.url)
    if args.label_studio_api_key and not args.label_studio_url:
        raise ClickmaskError("--label-studio-api-key needs --label-studio-url (the only host the token goes to)")
    reader = ImageReader(args.label_studio_url, args.label_studio_api_key, args.local_files_root)
    backend = LabelStudioBackend(client, reader, SessionCache(args.cache_size, args.cache_ttl))
    app = create_app(backend)
    print(f"clickmask label-studio-backend: http://{args.host}:{args.port} (model at {args.url}, "
          f"Label Studio at {args.label_studio_url or 'not set'}, "
          f"token {'set' if args.label_studio_api_key else 'not set'})", flush=True)
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="clickmask")
    return 0

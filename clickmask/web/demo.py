"""``clickmask demo``: one web page to click on, over the client library.

The page (``static/demo.html``, ``demo.js``, ``demo.css``; plain JavaScript, no build step)
opens an image, sends each click here, and draws the mask that comes back. This backend
keeps one :class:`~clickmask.client.Session` per browser tab in a bounded
:class:`~clickmask.web.session_cache.SessionCache` and talks to Triton only through
:class:`~clickmask.client.Client` (gRPC, request compression on). Several objects on one image
make an instance map; the result downloads as PNG or as COCO RLE JSON.

JSON API (all ``POST`` bodies are JSON unless a file is uploaded):

=======================  ======================================================================
``GET  /api/config``     samples, limits, the gRPC server it talks to
``GET  /api/health``     is the model server ready
``POST /api/open``       multipart ``image`` file or form field ``sample``; returns the tab id
``POST /api/click``      ``{tab, x, y, positive}``: the new state and the latency split
``POST /api/undo``       ``{tab}``; ``/api/reset``, ``/api/next`` (next object), ``/api/close``
``POST /api/seed``       multipart ``tab`` + ``mask`` PNG: start the current object from it
``GET  /api/download``   ``?tab=..&format=instances|mask|coco``
``GET  /api/image``      ``?tab=..``: the image as the server decoded it (JPEG)
=======================  ======================================================================

Errors come back as ``{"error": message, "code": ...}`` with a 4xx/5xx status; the message
says what went wrong and what to do, and the tab's state is unchanged.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import pathlib
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from clickmask.client import Mask, Session
from clickmask.client.errors import (
    ClickmaskError,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    PermissionDeniedError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from clickmask.web.session_cache import DEFAULT_TTL_S, SessionCache

LOGGER = logging.getLogger(__name__)

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
SAMPLES_DIR = STATIC_DIR / "samples"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_MAX_MEGAPIXELS = 40.0
DEFAULT_MAX_SESSIONS = 32
DEFAULT_COMPRESSION = "gzip"
#: Uploads larger than this are refused before they are read (a 40 MP JPEG is ~10-20 MB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
SAMPLE_CREDITS = {
    "astronaut": "Eileen Collins, NASA (public domain), via scikit-image",
    "chelsea": "Chelsea the cat, Stefan van der Walt (CC0), via scikit-image",
    "coffee": "Coffee cup, Rachel Michetti (CC0), via scikit-image",
}


class DemoError(Exception):
    """A request the page can recover from; ``message`` tells the person what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ------------------------------------------------------------------------------ images
def peek_image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP or WebP header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", data[i + 2:i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + length
    return None


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The upload as HxWx3 uint8 RGB, or a DemoError saying why not."""
    if not data:
        raise DemoError(400, "empty_file", f"'{name}' is empty; choose an image file (JPEG, PNG, WebP, BMP or TIFF)")
    size = peek_image_size(data)
    if size is not None:
        _check_pixels(size[0], size[1], name, max_pixels)
    buffer = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(415, "not_an_image",
                        f"'{name}' is not an image this demo can read; open a JPEG, PNG, WebP, BMP or TIFF file")
    _check_pixels(bgr.shape[1], bgr.shape[0], name, max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DemoError(
            413, "image_too_large",
            f"'{name}' is {width}x{height} = {width * height / 1e6:.1f} megapixels; this demo takes at most "
            f"{max_pixels / 1e6:g} megapixels (clickmask demo --max-megapixels). Downscale it first, e.g. to "
            f"{_fit(width, height, max_pixels)}")


def _fit(width: int, height: int, max_pixels: int) -> str:
    scale = (max_pixels / (width * height)) ** 0.5
    return f"{int(width * scale)}x{int(height * scale)}"


def decode_mask(data: bytes, name: str, image_hw: tuple[int, int]) -> np.ndarray:
    """An uploaded mask PNG as HxW bool (non-zero is object), of the image's size."""
    if not data:
        raise DemoError(400, "empty_file", f"'{name}' is empty; choose a mask PNG (0 background, non-zero object)")
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DemoError(415, "not_a_mask", f"'{name}' is not an image; upload a PNG mask (0 background, non-zero "
                                           "object), e.g. one downloaded from this page")
    if array.ndim == 3:
        array = array[..., :3].max(axis=2)
    height, width = image_hw
    if array.shape != (height, width):
        raise DemoError(400, "mask_size",
                        f"the mask '{name}' is {array.shape[1]}x{array.shape[0]} but the image is {width}x{height}; "
                        "upload a mask made for this image")
    return array > 0


# ------------------------------------------------------------------------------ state
class TimedPredictor:
    """Forwards to the real predictor and remembers when the last ``infer`` started and ended."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor
        self.size = predictor.size  # a Client fetches the model info here
        self.started = self.finished = 0.0

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.started = time.perf_counter()
        try:
            return self._predictor.infer(inputs)
        finally:
            self.finished = time.perf_counter()


@dataclass
class _Object:
    session: Session
    payload: dict | None = None  # cached once the object is finished


@dataclass
class Tab:
    """Everything one browser tab works on: the image, the finished objects and the current one."""

    name: str
    image: np.ndarray
    predictor: TimedPredictor
    current: _Object
    done: list[_Object] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_object(self, initial_mask: np.ndarray | None = None) -> _Object:
        return _Object(Session(self.predictor, self.image, initial_mask=initial_mask))

    @property
    def masks(self) -> list[Mask]:
        """Every non-empty object mask, in order (the current one last)."""
        masks = [o.session.mask for o in self.done]
        if self.current.session.mask is not None and self.current.session.mask.area:
            masks.append(self.current.session.mask)
        return [m for m in masks if m is not None and m.area]


def object_payload(number: int, session: Session) -> dict:
    mask = session.mask
    payload: dict[str, Any] = {
        "id": number,
        "clicks": [{"x": c.x, "y": c.y, "positive": c.positive} for c in session.clicks],
        "seeded": session.seeded,
        "area": 0, "bbox": [0, 0, 0, 0], "runs": [], "polygons": [],
    }
    if mask is not None:
        # Row-major runs (zeros first): the COCO RLE of the transposed mask. The page fills
        # each run with one typed-array call.
        payload.update(area=mask.area, bbox=list(mask.bbox), runs=Mask(mask.array.T).to_rle()["counts"],
                       polygons=mask.to_polygons(min_area=4.0))
    return payload


def state_payload(tab_id: str, tab: Tab) -> dict:
    objects = []
    for number, obj in enumerate(tab.done, start=1):
        if obj.payload is None:
            obj.payload = object_payload(number, obj.session)
        objects.append(obj.payload)
    height, width = tab.image.shape[:2]
    return {"tab": tab_id, "width": width, "height": height, "name": tab.name, "objects": objects,
            "current": object_payload(len(tab.done) + 1, tab.current.session)}


def instance_map(tab: Tab) -> np.ndarray:
    """0 background, k for the k-th object (later objects drawn over earlier ones)."""
    masks = tab.masks
    dtype = np.uint8 if len(masks) < 256 else np.uint16
    out = np.zeros(tab.image.shape[:2], dtype)
    for number, mask in enumerate(masks, start=1):
        out[mask.array] = number
    return out


def coco_document(tab: Tab) -> dict:
    """A COCO file for this image: one annotation per object, ``segmentation`` as compressed RLE."""
    height, width = tab.image.shape[:2]
    annotations = []
    for number, mask in enumerate(tab.masks, start=1):
        annotations.append({"id": number, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "segmentation": mask.to_rle(compressed=True), "area": mask.area,
                            "bbox": list(mask.bbox)})
    return {"info": {"description": "clickmask demo", "date_created": time.strftime("%Y-%m-%dT%H:%M:%S")},
            "images": [{"id": 1, "file_name": tab.name, "width": width, "height": height}],
            "categories": [{"id": 1, "name": "object"}], "annotations": annotations}


# ------------------------------------------------------------------------------ app
def _error_for(exc: ClickmaskError, server: str) -> tuple[int, str, str]:
    """HTTP status, code and a message a person can act on, for a client-library error."""
    if isinstance(exc, InvalidInputError):
        return 400, "invalid_input", str(exc)
    if isinstance(exc, ServerOverloadedError):
        return 503, "server_overloaded", (
            f"The segmentation server at {server} is overloaded and refused this click (its queue is full). "
            f"Nothing changed; click again in a moment. ({exc})")
    if isinstance(exc, ServerUnavailableError):
        return 503, "server_unavailable", (
            f"Cannot reach the segmentation server at {server}: it is down or restarting. Start it with "
            "'clickmask serve' (or run 'clickmask demo --start-server'), then click again; your image and "
            f"clicks are kept. ({exc})")
    if isinstance(exc, DeadlineExceededError):
        return 504, "deadline_exceeded", (
            f"The segmentation server at {server} did not answer in time (it may be busy). Nothing changed; "
            f"click again. ({exc})")
    if isinstance(exc, ModelNotReadyError):
        return 503, "model_not_ready", (
            f"The server at {server} is up but the clickmask model is not ready (still loading?). "
            f"Try again in a few seconds. ({exc})")
    if isinstance(exc, PermissionDeniedError):
        return 403, "permission_denied", f"The server at {server} refused the request: {exc}"
    if isinstance(exc, InferenceError):
        return 502, "inference_error", f"The segmentation server at {server} failed on this click: {exc}"
    return 500, "error", str(exc)


def create_app(predictor: Any, *, server_label: str = "in-process", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
               max_sessions: int = DEFAULT_MAX_SESSIONS, session_ttl_s: float = DEFAULT_TTL_S,
               cache: SessionCache | None = None):
    """The Flask app. ``predictor`` is a :class:`~clickmask.client.Client` (or anything with
    ``.size`` and ``.infer``, e.g. :class:`clickmask.serving.local.LocalPredictor` in tests)."""
    from flask import Flask, jsonify, request, send_file, send_from_directory
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    app.json.sort_keys = False
    max_pixels = int(max_megapixels * 1e6)
    tabs: SessionCache[Tab] = cache if cache is not None else SessionCache(max_sessions, session_ttl_s)
    app.extensions["clickmask_tabs"] = tabs
    app.extensions["clickmask_predictor"] = predictor

    def error(status: int, code: str, message: str):
        LOGGER.info("%s %s -> %d %s: %s", request.method, request.path, status, code, message)
        return jsonify(error=message, code=code), status

    @app.errorhandler(DemoError)
    def _demo_error(exc: DemoError):
        return error(exc.status, exc.code, exc.message)

    @app.errorhandler(ClickmaskError)
    def _client_error(exc: ClickmaskError):
        return error(*_error_for(exc, server_label))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        return error(413, "upload_too_large",
                     f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB; downscale the image first")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if not request.path.startswith("/api/"):
            return exc
        return error(exc.code or 500, "http_error", f"{exc.name}: {exc.description}")

    def body() -> dict:
        data = request.get_json(silent=True)
        if data is None:
            data = request.form.to_dict()
        if not isinstance(data, dict):
            raise DemoError(400, "bad_request", "send a JSON object")
        return data

    def tab_for(data: dict) -> tuple[str, Tab]:
        tab_id = data.get("tab") or request.args.get("tab")
        if not tab_id or not isinstance(tab_id, str):
            raise DemoError(400, "no_tab", "open an image first (no tab id in the request)")
        tab = tabs.get(tab_id)
        if tab is None:
            raise DemoError(410, "session_expired",
                            f"this tab's session is gone (idle for more than {tabs.ttl_s / 60:g} min, or more than "
                            f"{tabs.max_entries} open tabs); the page reopens the image and replays its clicks")
        return tab_id, tab

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "demo.html")

    @app.get("/api/config")
    def config():
        samples = []
        for path in sorted(SAMPLES_DIR.glob("*.jpg")):
            samples.append({"name": path.stem, "url": f"/static/samples/{path.name}",
                            "credit": SAMPLE_CREDITS.get(path.stem, "")})
        return jsonify(samples=samples, server=server_label, max_megapixels=max_megapixels,
                       max_upload_mb=MAX_UPLOAD_BYTES // 2**20, compression=getattr(predictor, "compression", None),
                       max_sessions=tabs.max_entries, session_ttl_s=tabs.ttl_s)

    @app.get("/api/health")
    def health():
        is_ready = getattr(predictor, "is_ready", None)
        ready = bool(is_ready()) if callable(is_ready) else True
        message = "ready" if ready else (
            f"the segmentation server at {server_label} is not reachable or its model is not ready; start it with "
            "'clickmask serve' (or run 'clickmask demo --start-server')")
        return jsonify(ready=ready, server=server_label, message=message, sessions=len(tabs))

    @app.post("/api/open")
    def open_image():
        sample = request.form.get("sample")
        if sample:
            path = SAMPLES_DIR / f"{pathlib.Path(sample).name}.jpg"
            if not path.is_file():
                raise DemoError(404, "unknown_sample", f"there is no sample named {sample!r}")
            data, name = path.read_bytes(), path.name
        else:
            upload = request.files.get("image")
            if upload is None:
                raise DemoError(400, "no_image", "choose an image file or a sample")
            data, name = upload.read(), pathlib.Path(upload.filename or "image").name
        image = decode_image(data, name, max_pixels)
        timed = TimedPredictor(predictor)
        tab = Tab(name=name, image=image, predictor=timed, current=_Object(Session(timed, image)))
        old = request.form.get("tab")
        if old:
            tabs.pop(old)
        tab_id = secrets.token_urlsafe(12)
        tabs.put(tab_id, tab)
        LOGGER.info("tab %s opened %s (%dx%d)", tab_id, name, image.shape[1], image.shape[0])
        return jsonify(state_payload(tab_id, tab))

    @app.post("/api/click")
    def click():
        started = time.perf_counter()
        data = body()
        tab_id, tab = tab_for(data)
        try:
            x, y = float(data["x"]), float(data["y"])
        except (KeyError, TypeError, ValueError):
            raise DemoError(400, "bad_click", "a click needs numbers x and y (image pixels)") from None
        positive = bool(data.get("positive", True))
        with tab.lock:
            before = time.perf_counter()
            tab.current.session.click(x=x, y=y, positive=positive)
            after = time.perf_counter()
            timed = tab.predictor
            payload = state_payload(tab_id, tab)
        payload["latency"] = {
            "encode_ms": (timed.started - before) * 1e3,
            "inference_ms": (timed.finished - timed.started) * 1e3,
            "decode_ms": (after - timed.finished) * 1e3,
            "respond_ms": (time.perf_counter() - after) * 1e3,
            "backend_ms": (time.perf_counter() - started) * 1e3,
        }
        return jsonify(payload)

    @app.post("/api/undo")
    def undo():
        tab_id, tab = tab_for(body())
        with tab.lock:
            session = tab.current.session
            if session.clicks:
                session.undo()
            elif session.seeded:
                tab.current = tab.new_object()  # drop the uploaded mask
            elif tab.done:
                tab.current = tab.done.pop()  # reopen the last finished object
                tab.current.payload = None
            return jsonify(state_payload(tab_id, tab))

    @app.post("/api/reset")
    def reset():
        tab_id, tab = tab_for(body())
        with tab.lock:
            tab.current.session.reset()
            return jsonify(state_payload(tab_id, tab))

    @app.post("/api/next")
    def next_object():
        tab_id, tab = tab_for(body())
        with tab.lock:
            mask = tab.current.session.mask
            if mask is None or not mask.area:
                raise DemoError(409, "nothing_to_finish",
                                "the current object has no mask yet: click on an object first, then 'Next object'")
            tab.done.append(tab.current)
            tab.current = tab.new_object()
            return jsonify(state_payload(tab_id, tab))

    @app.post("/api/seed")
    def seed():
        tab_id, tab = tab_for(body())
        upload = request.files.get("mask")
        if upload is None:
            raise DemoError(400, "no_mask", "choose a mask PNG to start from")
        mask = decode_mask(upload.read(), pathlib.Path(upload.filename or "mask.png").name, tab.image.shape[:2])
        with tab.lock:
            tab.current = tab.new_object(initial_mask=mask)
            return jsonify(state_payload(tab_id, tab))

    @app.post("/api/close")
    def close():
        data = request.get_json(silent=True, force=True) or request.form.to_dict()
        if isinstance(data, dict) and isinstance(data.get("tab"), str):
            tabs.pop(data["tab"])
        return jsonify(closed=True)

    @app.get("/api/download")
    def download():
        tab_id, tab = tab_for({})
        kind = request.args.get("format", "instances")
        stem = pathlib.Path(tab.name).stem or "image"
        with tab.lock:
            if kind == "coco":
                data = json.dumps(coco_document(tab)).encode()
                return send_file(io.BytesIO(data), mimetype="application/json", as_attachment=True,
                                 download_name=f"{stem}_coco.json")
            if kind == "mask":
                masks = tab.masks
                if not masks:
                    raise DemoError(409, "no_mask", "there is no mask yet: click on an object first")
                return send_file(io.BytesIO(masks[-1].to_png()), mimetype="image/png", as_attachment=True,
                                 download_name=f"{stem}_mask.png")
            if kind == "instances":
                ok, png = cv2.imencode(".png", instance_map(tab))
                return send_file(io.BytesIO(png.tobytes()), mimetype="image/png", as_attachment=True,
                                 download_name=f"{stem}_instances.png")
        raise DemoError(400, "bad_format", f"format must be instances, mask or coco, got {kind!r}")

    @app.get("/api/image")
    def image():
        _, tab = tab_for({})
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(tab.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        return send_file(io.BytesIO(jpeg.tobytes()), mimetype="image/jpeg")

    return app


# ------------------------------------------------------------------------------ CLI
def add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="a web page to click on: open an image, click, download the mask",
        description="Serve the clickmask demo page. Each browser tab gets one Session on the backend, which talks "
                    "to Triton through the gRPC client (request compression on). Open the printed address.")
    p.add_argument("--url", default=DEFAULT_URL,
                   help="Triton gRPC address HOST:PORT (default: %(default)s); with --start-server the port the "
                        "started server listens on")
    p.add_argument("--host", default=DEFAULT_HOST, help="address the page is served on (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the page (default: %(default)s; 0: any free)")
    p.add_argument("--start-server", action="store_true",
                   help="start the embedded tritonserver (as 'clickmask serve' does, with gzip responses) and stop "
                        "it on exit")
    p.add_argument("--compression", choices=["gzip", "deflate", "none"], default=DEFAULT_COMPRESSION,
                   help="gRPC compression of the requests to Triton (default: %(default)s)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help="refuse larger images (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                   help="browser tabs kept at once; the least recently used is dropped (default: %(default)s)")
    p.add_argument("--session-ttl", type=float, default=DEFAULT_TTL_S,
                   help="seconds an idle tab's session is kept (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline per click in seconds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=8, help="waitress worker threads (default: %(default)s)")
    p.set_defaults(func=run_demo)




def run_demo(args: argparse.Namespace) -> int:
    import signal

    from waitress import create_server

    from clickmask.client import Client

    host, _, port_text = args.url.rpartition(":")
    if not host or not port_text.isdigit():
        raise InvalidInputError(f"--url must be HOST:PORT, e.g. 127.0.0.1:8001, got {args.url!r}")
    triton = None
    if args.start_server:
        from clickmask.serving.ports import free_port
        from clickmask.serving.server import ServerConfig, TritonServer

        config = ServerConfig(host=host, grpc_port=int(port_text), http_port=free_port(), metrics_port=free_port(),
                              grpc_response_compression="low")
        triton = TritonServer(config)
        print(f"starting tritonserver (log: {triton.log_path}) ...", flush=True)
        triton.start()
        print(f"tritonserver pid {triton.pid}: gRPC {config.grpc_url}", flush=True)
    client = Client(args.url, timeout_s=args.timeout, compression=None if args.compression == "none" else args.compression)
    try:
        app = create_app(client, server_label=args.url, max_megapixels=args.max_megapixels,
                         max_sessions=args.max_sessions, session_ttl_s=args.session_ttl)
        server = create_server(app, host=args.host, port=args.port, threads=args.threads)

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        if not client.is_ready():
            print(f"warning: no ready clickmask model at {args.url} yet; start it with 'clickmask serve' "
                  "(the page says so too)", flush=True)
        print(f"clickmask demo on http://{args.host}:{server.effective_port}/ (model server {args.url}); "
              "Ctrl-C stops it", flush=True)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    finally:
        client.close()
        if triton is not None:
            print("stopping tritonserver ...", flush=True)
            triton.stop()
    print("stopped", flush=True)
    return 0

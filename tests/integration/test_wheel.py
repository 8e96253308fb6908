"""A built wheel serves on its own: clean clone -> wheel -> fresh venv -> ``clickmask serve``
from a folder outside the checkout -> a click from the client.

The venv has no editable install of the project (it is created here, with ``[serve]`` only:
no torch, no export extra), so the model, the Python adapter and the config are found through
the installed package. The venv is cached outside the checkout, keyed by the dependencies.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ..conftest import free_port

pytestmark = pytest.mark.slow
ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVE_DEPS = ["nvidia-pytriton==0.7.0", "onnxruntime>=1.16", "numpy<2", "tritonclient[grpc]>=2.40",
              "opencv-python-headless>=4.8", "prometheus-client>=0.17"]


def _run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    clone = tmp_path_factory.mktemp("clone") / "clickmask"
    _run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)])
    assert not (clone / "model_repository" / "clickmask" / "1" / "model.onnx").exists()  # a clean clone
    # the model from the committed checkpoint, as 'make model' does (this venv has the export extra)
    _run([str(ROOT / ".venv" / "bin" / "clickmask"), "export", "onnx", "--checkpoint",
          str(clone / "export" / "checkpoints" / "clickmask-lite0.pt"),
          "--output", str(clone / "model_repository" / "clickmask" / "1" / "model.onnx")], cwd=clone)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(clone)])
    (built,) = dist.glob("clickmask-*.whl")
    return built


@pytest.fixture(scope="module")
def serve_venv() -> pathlib.Path:
    key = hashlib.sha256(" ".join(SERVE_DEPS).encode()).hexdigest()[:12]
    venv = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"clickmask-wheel-venv-{key}"
    if not (venv / ".ready").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *SERVE_DEPS], timeout=900)
        (venv / ".ready").touch()
    return venv


def test_the_wheel_holds_the_model_the_adapter_and_the_config(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ("clickmask/model_repository/clickmask/config.pbtxt",
                   "clickmask/model_repository/clickmask/1/model.py",
                   "clickmask/model_repository/clickmask/1/model.onnx",
                   "clickmask/export/validation/val-v1.txt"):
        assert member in names, member


def test_an_installed_wheel_serves_the_default_model_outside_the_checkout(wheel, serve_venv, tmp_path, datasets_dir):
    from clickmask.client import Client
    from clickmask.datasets import list_objects, load_object

    python = serve_venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    where = _run([str(python), "-c", "import clickmask, clickmask.serving.server as s; print(clickmask.__file__); "
                  "print(s.DEFAULT_MODEL_REPOSITORY)"], cwd=tmp_path).stdout.split()
    assert all(str(serve_venv) in w and str(ROOT) not in w for w in where), where
    ports = [free_port() for _ in range(3)]
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{serve_venv / 'bin'}:{env.get('PATH', '')}"
    server = subprocess.Popen([str(serve_venv / "bin" / "clickmask"), "serve", "--grpc-port", str(ports[0]),
                               "--http-port", str(ports[1]), "--metrics-port", str(ports[2])],
                              cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        url = f"127.0.0.1:{ports[0]}"
        with Client(url, timeout_s=10, retries=0) as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if client.is_ready():
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(1.0)
            assert server.poll() is None, server.stdout.read()[-3000:]
            image, gt, _ = load_object(list_objects(datasets_dir / "COCO_MVal", limit=1)[0])
            ys, xs = np.nonzero(gt)
            inside = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
            mask = client.session(image).click(x=float(xs[inside]), y=float(ys[inside]))
            overlap = (mask.array & gt).sum() / max(1, (mask.array | gt).sum())
            assert overlap > 0.5, f"IoU {overlap:.2f} of the first click through the installed wheel"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

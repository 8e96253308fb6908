"""The command line against real servers: segment, and the serve lifecycle."""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest

from clickmask.errors import ServerStartError
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

CLI = [sys.executable, "-m", "clickmask.cli"]


def _first_grabcut_image(grabcut_dir: pathlib.Path) -> pathlib.Path:
    return sorted((grabcut_dir / "images").iterdir())[0]


def test_segment_writes_a_full_size_mask_and_overlay(grpc_url, grabcut_dir, tmp_path):
    image_path = _first_grabcut_image(grabcut_dir)
    height, width = cv2.imread(str(image_path)).shape[:2]
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    result = subprocess.run(
        CLI + ["segment", str(image_path), "--pos", f"{width // 2},{height // 2}",
               "--neg", "5,5", "--url", grpc_url, "-o", str(out), "--overlay", str(overlay)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (height, width)
    assert set(mask.ravel().tolist()) <= {0, 255}
    assert cv2.imread(str(overlay)).shape == (height, width, 3)


def test_segment_click_outside_the_image_is_a_clear_error(grpc_url, grabcut_dir, tmp_path):
    image_path = _first_grabcut_image(grabcut_dir)
    result = subprocess.run(CLI + ["segment", str(image_path), "--pos", "99999,5", "--url", grpc_url,
                                   "-o", str(tmp_path / "m.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "outside" in result.stderr and "99999" in result.stderr


def test_segment_against_a_server_that_is_not_running_says_so(grabcut_dir, tmp_path):
    image_path = _first_grabcut_image(grabcut_dir)
    result = subprocess.run(CLI + ["segment", str(image_path), "--pos", "10,10", "--url", f"127.0.0.1:{free_port()}",
                                   "--timeout", "2", "-o", str(tmp_path / "m.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error" in result.stderr.lower()
    assert not (tmp_path / "m.png").exists()


def test_failed_model_load_raises_with_the_server_log_lines(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clickmask", repo / "clickmask",
                    ignore=shutil.ignore_patterns("model.onnx", "__pycache__"))
    (repo / "clickmask" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=120)
    with pytest.raises(ServerStartError) as info:
        TritonServer(config).start()
    message = str(info.value)
    assert "exited" in message or "not ready" in message
    assert "model.onnx" in message or "clickmask" in message


def _start_serve(tmp_path):
    ports = [str(free_port()) for _ in range(3)]
    process = subprocess.Popen(
        CLI + ["serve", "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines, child_pid = [], None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("tritonserver pid"):
            child_pid = int(line.split()[-1])
        if "press Ctrl-C" in line:
            return process, child_pid, lines
    process.kill()
    pytest.fail("clickmask serve did not become ready:\n" + "".join(lines))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    process, child_pid, lines = _start_serve(tmp_path)
    assert any("gRPC" in line for line in lines)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    time.sleep(0.5)
    assert child_pid is not None and not _alive(child_pid)


def test_server_child_does_not_outlive_a_killed_parent(tmp_path):
    process, child_pid, _ = _start_serve(tmp_path)
    assert child_pid is not None and _alive(child_pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    deadline = time.monotonic() + 20
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child_pid)

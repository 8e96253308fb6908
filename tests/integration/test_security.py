"""Security settings against the real tritonserver: loopback, admin key, TLS, model control none.

The locked-down server here runs gRPC over TLS with a self-signed certificate for
127.0.0.1/localhost (made with the openssl CLI) and puts every admin and read-only API
behind the key; the shared server (``triton`` fixture) shows the defaults.
"""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client, PermissionDeniedError, ServerUnavailableError
from clickmask.errors import ServerStartError
from clickmask.serving.server import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER, ServerConfig, TritonServer

from ..conftest import free_port

KEY = "test-admin-key-0123456789"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def locked_server(certificate):
    cert, key = certificate
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                          startup_timeout_s=180.0, tls_cert=cert, tls_key=key, admin_key=KEY, locked_down=True)
    with TritonServer(config) as server:
        yield server


def _admin_calls(raw: grpcclient.InferenceServerClient):
    return {
        "model-repository": lambda h: raw.get_model_repository_index(headers=h),
        "model-control": lambda h: raw.unload_model("clickmask", headers=h),
        "model-config": lambda h: raw.get_model_config("clickmask", headers=h),
        "statistics": lambda h: raw.get_inference_statistics("clickmask", headers=h),
        "logging": lambda h: raw.get_log_settings(headers=h),
        "trace": lambda h: raw.get_trace_settings(headers=h),
        "shared-memory": lambda h: raw.get_system_shared_memory_status(headers=h),
    }


def test_defaults_bind_to_loopback_and_lock_the_admin_apis():
    config = ServerConfig()
    assert config.host == "127.0.0.1" and config.model_control_mode == "none"
    assert set(config.restricted_apis) == {"model-repository", "shared-memory", "trace", "logging"}
    command = " ".join(TritonServer(config).public_command())
    for flag in ("--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=none"):
        assert flag in command
    assert f"{ADMIN_KEY_HEADER}=***" in command, "the admin key must not reach the logs"


def test_the_shared_server_keeps_inference_config_and_statistics_open_but_not_the_admin_apis(grpc_url):
    raw = grpcclient.InferenceServerClient(grpc_url)
    assert raw.is_server_ready() and raw.get_model_metadata("clickmask").name == "clickmask"
    assert raw.get_model_config("clickmask").config.name == "clickmask"
    assert raw.get_inference_statistics("clickmask").model_stats
    for name in ("model-repository", "model-control", "logging", "trace", "shared-memory"):
        with pytest.raises(InferenceServerException, match="restricted"):
            _admin_calls(raw)[name](None)
    assert raw.is_model_ready("clickmask"), "the model is still loaded"
    raw.close()


def test_plain_grpc_cannot_talk_to_the_tls_server(locked_server):
    with Client(locked_server.config.grpc_url, timeout_s=3, retries=0) as client:
        with pytest.raises(ServerUnavailableError):
            client.size  # noqa: B018


def test_a_tls_client_annotates_without_the_key(locked_server, certificate):
    cert, _ = certificate
    with Client(locked_server.config.grpc_url, ssl=True, root_certificates=str(cert)) as client:
        assert client.is_ready()
        assert client.size == 320  # from the metadata: model-config is locked
        assert client.model_info.max_batch_size == 0
        session = client.session(np.zeros((200, 300, 3), np.uint8))
        assert session.click(x=150, y=100).array.shape == (200, 300)


def test_every_admin_api_needs_the_key_and_the_wrong_key_is_refused(locked_server, certificate):
    cert, _ = certificate
    raw = grpcclient.InferenceServerClient(locked_server.config.grpc_url, ssl=True, root_certificates=str(cert))
    calls = _admin_calls(raw)
    for name, call in calls.items():
        for headers in (None, {GRPC_ADMIN_KEY_HEADER: "wrong-key-0123456789"}, {ADMIN_KEY_HEADER: KEY}):
            with pytest.raises(InferenceServerException, match="restricted"):
                call(headers)
    good = {GRPC_ADMIN_KEY_HEADER: KEY}
    assert calls["model-config"](good).config.name == "clickmask"
    assert calls["statistics"](good).model_stats
    assert calls["model-repository"](good).models[0].name == "clickmask"
    with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
        calls["model-control"](good)  # model control mode none: even the key cannot unload
    assert raw.is_model_ready("clickmask")
    raw.close()


def test_the_client_reports_a_restricted_api_as_permission_denied(locked_server, certificate):
    cert, _ = certificate
    with Client(locked_server.config.grpc_url, ssl=True, root_certificates=str(cert), retries=3) as client:
        with pytest.raises(PermissionDeniedError, match="restricted to the admin key"):
            client._call(lambda t: client._triton.get_inference_statistics("clickmask", client_timeout=t))


def test_http_admin_apis_are_locked_too_and_health_stays_open(locked_server):
    base = locked_server.config.http_url
    assert urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5).status == 200
    for path, method in (("/v2/repository/index", "POST"), ("/v2/models/clickmask/config", "GET"),
                         ("/v2/models/clickmask/stats", "GET"), ("/v2/logging", "GET")):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=5)
        assert info.value.code == 403, path
        keyed = urllib.request.Request(base + path, method=method, headers={ADMIN_KEY_HEADER: KEY})
        assert urllib.request.urlopen(keyed, timeout=5).status == 200, path


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.pem"}, "does not exist"),
        ({"tls_key": "/etc/hostname"}, "both a certificate and its key"),
        ({"admin_key": "short"}, "at least 16 characters"),
        ({"admin_key": "has:colon=and,comma-0123456789"}, "at least 16 characters of"),
        ({"model_control_mode": "poll-ish"}, "model_control_mode"),
    ],
)
def test_bad_security_settings_are_refused_before_start(kwargs, fragment):
    with pytest.raises(ServerStartError, match=fragment):
        ServerConfig(**kwargs)

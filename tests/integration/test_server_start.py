"""A command line tritonserver refuses: the error names the reason, not its usage text."""
from __future__ import annotations

import pytest

from clickmask.errors import ServerStartError
from clickmask.serving.server import ServerConfig, TritonServer

from ..conftest import free_port


@pytest.mark.parametrize(
    "extra, reason",
    [
        (("--no-such-option=1",), "unrecognized option '--no-such-option=1'"),  # printed before the usage
        (("--grpc-port=abc",), "Invalid option value. Got abc"),  # printed after it
    ],
)
def test_a_refused_command_line_reports_tritonservers_reason(extra, reason, tmp_path):
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                          startup_timeout_s=60.0, extra_args=extra)
    with pytest.raises(ServerStartError) as info:
        TritonServer(config, log_path=tmp_path / "tritonserver.log").start()
    message = str(info.value)
    assert "refused its command line" in message
    assert reason in message
    assert "--log-error" not in message and "Management:" not in message  # no usage text
    assert len(message.splitlines()) < 10

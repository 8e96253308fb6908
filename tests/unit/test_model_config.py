"""Generated Triton model configurations: parse with Triton's own proto, keep the contract."""
from __future__ import annotations

import pathlib

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from clickmask.export.model_config import (
    INPUTS,
    OUTPUT,
    Contract,
    ModelConfigError,
    onnx_input_size,
    onnxruntime_config,
    preferred_batch_sizes,
    python_config,
    tensorrt_config,
    torch_cuda_config,
    write_repository,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = REPO_ROOT / "model_repository" / "clickmask" / "config.pbtxt"
SHIPPED_ONNX = REPO_ROOT / "model_repository" / "clickmask" / "1" / "model.onnx"


def parse(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())


def assert_contract(config: pb.ModelConfig, size: int, max_batch: int, batched: bool = True) -> None:
    """What the client relies on: names, UINT8, [C,S,S] per request, batching (the embedded
    python entry runs each request alone since session 13), input_size."""
    assert config.name == "clickmask"
    assert config.max_batch_size == max_batch
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (name, pb.TYPE_UINT8, [c, size, size]) for name, c in INPUTS]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        (OUTPUT[0], pb.TYPE_UINT8, [OUTPUT[1], size, size])]
    assert config.parameters["input_size"].string_value == str(size)
    assert config.HasField("dynamic_batching") == batched
    assert all(1 < b <= max_batch for b in config.dynamic_batching.preferred_batch_size)
    assert config.model_warmup, "a warm-up keeps the first real click fast"
    for warmup in config.model_warmup:
        assert 1 <= warmup.batch_size <= max_batch
        assert {k: list(v.dims) for k, v in warmup.inputs.items()} == {n: [c, size, size] for n, c in INPUTS}


def test_python_config_reproduces_the_committed_embedded_default_byte_for_byte():
    assert python_config(Contract(320)) == COMMITTED.read_text()


@pytest.mark.parametrize("size", [256, 320, 448])
def test_python_config_keeps_the_contract(size):
    config = parse(python_config(Contract(size)))
    assert_contract(config, size, 16, batched=False)
    assert_contract(parse(python_config(Contract(size), dynamic_batching=True)), size, 16)
    assert config.backend == "python"
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert config.parameters["onnx_file"].string_value == "model.onnx"


def test_onnxruntime_cpu_config_is_the_ngc_onnxruntime_platform_on_cpu():
    config = parse(onnxruntime_config(Contract(320), intra_op_threads=4))
    assert_contract(config, 320, 16)
    assert config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == "model.onnx"
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert config.parameters["intra_op_thread_count"].string_value == "4"
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_onnxruntime_gpu_config_can_add_the_tensorrt_accelerator_in_fp16():
    config = parse(onnxruntime_config(Contract(320), gpu=True, tensorrt_fp16=True, instance_count=2))
    assert_contract(config, 320, 16)
    group = config.instance_group[0]
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_GPU, 2)
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    assert accel.parameters["precision_mode"] == "FP16"


def test_tensorrt_accelerator_without_a_gpu_is_refused():
    with pytest.raises(ModelConfigError, match="needs a GPU"):
        onnxruntime_config(Contract(320), tensorrt_fp16=True)


def test_tensorrt_config_batches_within_the_engine_profile():
    config = parse(tensorrt_config(Contract(320, max_batch_size=12), opt_batch=6, instance_count=2))
    assert_contract(config, 320, 12)
    assert config.platform == "tensorrt_plan"
    assert config.default_model_filename == "model.plan"
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (pb.ModelInstanceGroup.KIND_GPU, 2)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 6, 8, 12]
    assert sorted(w.batch_size for w in config.model_warmup) == [1, 12]
    assert not config.optimization.cuda.graphs


def test_tensorrt_config_captures_cuda_graphs_for_batch_one_and_every_preferred_size():
    config = parse(tensorrt_config(Contract(320), opt_batch=4, cuda_graphs=True))
    assert config.optimization.cuda.graphs
    assert [g.batch_size for g in config.optimization.cuda.graph_spec] == [1, 4, 8, 16]


@pytest.mark.parametrize(("max_batch", "opt", "expected"), [
    (16, None, (4, 8, 16)), (16, 4, (4, 8, 16)), (12, 6, (4, 6, 8, 12)), (1, None, (1,)), (2, 1, (2,)),
])
def test_preferred_batch_sizes_include_opt_and_max(max_batch, opt, expected):
    assert preferred_batch_sizes(max_batch, opt) == expected


def test_opt_batch_outside_the_profile_is_refused():
    with pytest.raises(ModelConfigError, match="opt batch 32"):
        preferred_batch_sizes(16, 32)


@pytest.mark.parametrize("size", [0, 100, -32])
def test_contract_refuses_sizes_that_are_not_multiples_of_32(size):
    with pytest.raises(ModelConfigError, match="multiple of 32"):
        Contract(size)


# ----------------------------------------------------------------------------- repository
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> pathlib.Path:
    """A contract-shaped ONNX graph (S=64) built with onnx.helper: no torch, milliseconds."""
    import onnx
    from onnx import TensorProto, helper

    shapes = {name: ["batch", c, 64, 64] for name, c in INPUTS}
    graph = helper.make_graph(
        [helper.make_node("Identity", ["prev_mask"], ["mask_prob"])], "tiny",
        [helper.make_tensor_value_info(n, TensorProto.UINT8, s) for n, s in shapes.items()],
        [helper.make_tensor_value_info("mask_prob", TensorProto.UINT8, ["batch", 1, 64, 64])])
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_input_size_reads_s_from_the_image_input(tiny_onnx):
    assert onnx_input_size(tiny_onnx) == 64


@pytest.mark.parametrize("backend", ["python", "onnxruntime"])
def test_repository_writer_lays_out_a_model_with_s_from_the_onnx_file(backend, tiny_onnx, tmp_path):
    config_path = write_repository(backend, tmp_path / "repo", onnx_path=tiny_onnx)
    assert config_path == tmp_path / "repo" / "clickmask" / "config.pbtxt"
    assert_contract(parse(config_path.read_text()), 64, 16, batched=backend != "python")
    assert (tmp_path / "repo" / "clickmask" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert (tmp_path / "repo" / "clickmask" / "1" / "model.py").is_file() == (backend == "python")


def test_repository_writer_takes_the_tensorrt_profile_from_the_plan_metadata(tiny_onnx, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real engine")
    (tmp_path / "model.plan.json").write_text('{"size": 64, "opt_batch": 2, "max_batch": 8}')
    config_path = write_repository("tensorrt", tmp_path / "repo", onnx_path=tiny_onnx, plan_path=plan,
                                   cuda_graphs=True)
    config = parse(config_path.read_text())
    assert_contract(config, 64, 8)
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert (tmp_path / "repo" / "clickmask" / "1" / "model.plan").read_bytes() == b"not a real engine"
    with pytest.raises(ModelConfigError, match="exceeds the plan's profile max 8"):
        write_repository("tensorrt", tmp_path / "repo2", onnx_path=tiny_onnx, plan_path=plan, max_batch_size=16)


def test_repository_writer_refuses_a_plan_built_for_another_size(tiny_onnx, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"x")
    (tmp_path / "model.plan.json").write_text('{"size": 320, "opt_batch": 4, "max_batch": 16}')
    with pytest.raises(ModelConfigError, match="S=320"):
        write_repository("tensorrt", tmp_path / "repo", onnx_path=tiny_onnx, plan_path=plan)


def test_repository_writer_needs_the_plan_for_tensorrt(tiny_onnx, tmp_path):
    with pytest.raises(ModelConfigError, match="clickmask export tensorrt"):
        write_repository("tensorrt", tmp_path / "repo", onnx_path=tiny_onnx)


def test_repository_cli_writes_the_onnxruntime_repository(tiny_onnx, tmp_path, capsys):
    from clickmask.cli import main

    assert main(["export", "repository", "--backend", "onnxruntime", "--gpu", "--tensorrt-fp16",
                 "--onnx", str(tiny_onnx), "--output", str(tmp_path / "repo")]) == 0
    config = parse((tmp_path / "repo" / "clickmask" / "config.pbtxt").read_text())
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert main(["export", "repository", "--backend", "onnxruntime", "--tensorrt-fp16",
                 "--onnx", str(tiny_onnx), "--output", str(tmp_path / "repo2")]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_torch_cuda_config_serves_the_python_adapter_on_gpu_instances():
    config = parse(torch_cuda_config(Contract(320, max_batch_size=64), instance_count=3, queue_delay_us=500,
                                     predictor_options={"compile": "false"}))
    assert_contract(config, 320, 64)
    assert config.backend == "python"
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (pb.ModelInstanceGroup.KIND_GPU, 3)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["predictor"] == "torch-cuda" and params["compile"] == "false" and params["cuda_graphs"] == "true"
    assert params["batch_buckets"] == "2,4,8,16,32,64" and params["streams"] == "1"


def test_torch_cuda_config_refuses_options_the_predictor_would_refuse():
    with pytest.raises(ModelConfigError, match="set cuda_graphs false"):
        torch_cuda_config(Contract(320), predictor_options={"device": "cpu"})
    with pytest.raises(ModelConfigError, match="max_batch_size >= 2"):
        torch_cuda_config(Contract(320, max_batch_size=1))


def test_repository_cli_writes_the_torch_cuda_repository(tmp_path, capsys):
    from clickmask.cli import main

    checkpoint = REPO_ROOT / "export" / "checkpoints" / "clickmask-lite0.pt"
    assert main(["export", "repository", "--backend", "torch-cuda", "--checkpoint", str(checkpoint),
                 "--max-batch-size", "32", "--predictor-option", "precision=fp32",
                 "--output", str(tmp_path / "repo")]) == 0
    config = parse((tmp_path / "repo" / "clickmask" / "config.pbtxt").read_text())
    assert config.max_batch_size == 32 and config.parameters["precision"].string_value == "fp32"
    assert main(["export", "repository", "--backend", "torch-cuda", "--checkpoint", str(checkpoint),
                 "--predictor-option", "compile", "--output", str(tmp_path / "repo2")]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_export_repository_with_and_without_the_dynamic_batcher(tmp_path):
    """The python entry runs each request alone by default (since session 13: no batcher stall,
    no queue policy); --dynamic-batching puts the batcher back; the other backends always batch
    and refuse --no-dynamic-batching."""
    from clickmask.cli import main

    path = write_repository("python", tmp_path / "plain", onnx_path=SHIPPED_ONNX)
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    assert not config.HasField("dynamic_batching") and config.max_batch_size == 16
    assert main(["export", "repository", "--backend", "python", "--onnx", str(SHIPPED_ONNX),
                 "--output", str(tmp_path / "batched"), "--dynamic-batching"]) == 0
    batched = parse((tmp_path / "batched" / "clickmask" / "config.pbtxt").read_text())
    assert batched.HasField("dynamic_batching") and not batched.dynamic_batching.HasField("default_queue_policy")
    with pytest.raises(ModelConfigError, match="python only"):
        write_repository("onnxruntime", tmp_path / "ort", onnx_path=SHIPPED_ONNX, dynamic_batching=False)
    ort = write_repository("onnxruntime", tmp_path / "ort2", onnx_path=SHIPPED_ONNX)
    assert parse(ort.read_text()).HasField("dynamic_batching")


def test_the_embedded_entries_have_no_queue_policy_and_queue_policy_restores_it(tmp_path):
    """Since session 13 the raw and compact CPU entries carry no queue policy: any policy turns
    off Triton's prefetching, and requests then stall behind the batcher's 500 ms sleep
    (docs/wire.md). --queue-policy brings back the bound of session 12 on both."""
    from clickmask.export.model_config import (
        DEFAULT_MAX_QUEUE_SIZE,
        DEFAULT_QUEUE_TIMEOUT_US,
        ModelConfigError,
        compact_config,
        write_repository,
    )

    for text in (python_config(Contract(320), dynamic_batching=True), compact_config(Contract(320))):
        assert "default_queue_policy" not in text
    path = write_repository("python", tmp_path / "policy", onnx_path=SHIPPED_ONNX, queue_policy=True,
                            dynamic_batching=True)
    for config_path in (path, tmp_path / "policy" / "clickmask_compact" / "config.pbtxt"):
        policy = parse(config_path.read_text()).dynamic_batching.default_queue_policy
        assert policy.max_queue_size == DEFAULT_MAX_QUEUE_SIZE
        assert policy.default_timeout_microseconds == DEFAULT_QUEUE_TIMEOUT_US
        assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    with pytest.raises(ModelConfigError, match="needs the dynamic batcher"):
        write_repository("python", tmp_path / "x", onnx_path=SHIPPED_ONNX, queue_policy=True, dynamic_batching=False)
    with pytest.raises(ModelConfigError, match="python only"):
        write_repository("onnxruntime", tmp_path / "y", onnx_path=SHIPPED_ONNX, queue_policy=True)


def test_the_embedded_entry_runs_two_instances_of_one_thread_and_one_switch_restores_one_of_two(tmp_path):
    """Since session 14 the python entry has two instances of one ONNX Runtime thread;
    --instance-count 1 --intra-op-threads 2 gives back the session-13 layout."""
    from clickmask.cli import main

    def layout(config_path):
        config = parse(config_path.read_text())
        return sum(group.count for group in config.instance_group), config.parameters["intra_op_threads"].string_value

    assert layout(COMMITTED) == (2, "1")
    assert layout(write_repository("python", tmp_path / "plain", onnx_path=SHIPPED_ONNX)) == (2, "1")
    assert main(["export", "repository", "--backend", "python", "--onnx", str(SHIPPED_ONNX),
                 "--output", str(tmp_path / "old"), "--instance-count", "1", "--intra-op-threads", "2"]) == 0
    assert layout(tmp_path / "old" / "clickmask" / "config.pbtxt") == (1, "2")
    compact = parse((tmp_path / "old" / "clickmask_compact" / "config.pbtxt").read_text())
    assert compact.instance_group[0].count == 1  # the compact entry's crop cache must not split
    with pytest.raises(ModelConfigError, match="python only"):
        write_repository("onnxruntime", tmp_path / "ort", onnx_path=SHIPPED_ONNX, intra_op_threads=2)
    with pytest.raises(ModelConfigError, match="at least 1"):
        write_repository("python", tmp_path / "zero", onnx_path=SHIPPED_ONNX, intra_op_threads=0)


def test_the_first_embedded_instance_is_preferred_and_one_switch_makes_them_take_turns(tmp_path):
    """Since session 15 the python entry's first instance has rate-limiter priority 1 and the
    other 1000 (Triton, with --rate-limit execution_count, picks the free instance of lowest
    executions x priority); --no-prefer-first-instance writes one group of equal instances."""
    from clickmask.cli import main
    from clickmask.export.model_config import OTHER_INSTANCE_PRIORITY

    def groups(config_path):
        config = parse(config_path.read_text())
        return [(g.count, g.kind, g.rate_limiter.priority) for g in config.instance_group]

    cpu = pb.ModelInstanceGroup.KIND_CPU
    assert groups(COMMITTED) == [(1, cpu, 1), (1, cpu, OTHER_INSTANCE_PRIORITY)]
    assert groups(write_repository("python", tmp_path / "three", onnx_path=SHIPPED_ONNX, instance_count=3)) == [
        (1, cpu, 1), (2, cpu, OTHER_INSTANCE_PRIORITY)]
    assert groups(write_repository("python", tmp_path / "one", onnx_path=SHIPPED_ONNX, instance_count=1)) == [
        (1, cpu, 0)]  # nothing to prefer
    assert main(["export", "repository", "--backend", "python", "--onnx", str(SHIPPED_ONNX),
                 "--output", str(tmp_path / "turns"), "--no-prefer-first-instance"]) == 0
    assert groups(tmp_path / "turns" / "clickmask" / "config.pbtxt") == [(2, cpu, 0)]
    with pytest.raises(ModelConfigError, match="python only"):
        write_repository("onnxruntime", tmp_path / "ort", onnx_path=SHIPPED_ONNX, prefer_first_instance=True)

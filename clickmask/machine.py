"""Which CPU a figure came from.

The machines these benchmarks run on are not all the same CPU: some are AMD EPYC with AVX2
only, some Intel Xeon with AVX-512 (FP16, BF16, VNNI) and AMX. ONNX Runtime and PyTorch pick
different kernels on each, so latencies differ, int8 gains differ (VNNI), and float results
differ in the last bits, which can move a discrete outcome such as NoC@90 by a click or more.
Every benchmark and result file therefore names its CPU with :func:`describe`.
"""
from __future__ import annotations

import os
import pathlib
import platform

__all__ = ["SIMD_FEATURES", "cpu_model", "cpu_flags", "simd_summary", "describe", "describe_dict"]

# /proc/cpuinfo flag -> the name we print, in the order we print them: the features that change
# which kernels ONNX Runtime (MLAS) and PyTorch (oneDNN) run.
SIMD_FEATURES: tuple[tuple[str, str], ...] = (
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX-512F"),
    ("avx512bw", "AVX-512BW"),
    ("avx512_vnni", "AVX-512-VNNI"),
    ("avx512_bf16", "AVX-512-BF16"),
    ("avx512_fp16", "AVX-512-FP16"),
    ("amx_tile", "AMX"),
    ("amx_bf16", "AMX-BF16"),
    ("amx_int8", "AMX-INT8"),
    ("asimd", "NEON"),
    ("sve", "SVE"),
)


def _cpuinfo(path: pathlib.Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _fields(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), " ".join(value.split()))
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family/model numbers (``/proc/cpuinfo``): virtual machines
    often report a generic name such as ``Intel(R) Xeon(R) Processor``, and the numbers still tell
    the generations apart. Falls back to what ``platform`` knows."""
    fields = _fields(_cpuinfo(pathlib.Path("/proc/cpuinfo")) if cpuinfo is None else cpuinfo)
    name = fields.get("model name") or fields.get("cpu model") or platform.processor() or platform.machine()
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if fields.get(key)]
    return f"{name or 'unknown CPU'} ({', '.join(numbers)})" if numbers else (name or "unknown CPU")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first processor in ``/proc/cpuinfo`` (``Features`` on ARM)."""
    fields = _fields(_cpuinfo(pathlib.Path("/proc/cpuinfo")) if cpuinfo is None else cpuinfo)
    return set((fields.get("flags") or fields.get("Features") or "").split())


def simd_summary(flags: set[str] | None = None) -> str:
    """The SIMD features that matter here, e.g. ``AVX2 FMA AVX-512F ... AMX-INT8``."""
    flags = cpu_flags() if flags is None else flags
    names = [name for flag, name in SIMD_FEATURES if flag in flags]
    return " ".join(names) if names else "no AVX2/AVX-512/AMX/NEON flags seen"


def describe_dict() -> dict[str, object]:
    """The CPU of this machine, for result JSON files."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "simd": simd_summary(flags), "cores": os.cpu_count(),
            "arch": platform.machine(), "python": platform.python_version()}


def describe() -> str:
    """One line for a result table's header: model, cores, the SIMD flags that matter."""
    info = describe_dict()
    return f"{info['cpu']}, {info['cores']} cores, {info['arch']}; SIMD: {info['simd']}"


if __name__ == "__main__":  # python -m clickmask.machine
    print(describe())

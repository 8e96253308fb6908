"""The CPU line every benchmark prints (clickmask.machine), on cpuinfo texts of both kinds."""
from __future__ import annotations

from clickmask import machine

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 sha_ni
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm sve\n"


def test_model_name_carries_family_and_model_numbers():
    assert machine.cpu_model(XEON) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (cpu family 6, model 143)"
    assert machine.cpu_model(EPYC) == "AMD EPYC 7B13 (cpu family 25, model 1)"


def test_simd_summary_names_the_features_that_change_kernels():
    xeon = machine.simd_summary(machine.cpu_flags(XEON))
    assert xeon == ("AVX2 FMA AVX-VNNI AVX-512F AVX-512BW AVX-512-VNNI AVX-512-BF16 AVX-512-FP16 "
                    "AMX AMX-BF16 AMX-INT8")
    assert machine.simd_summary(machine.cpu_flags(EPYC)) == "AVX2 FMA"
    assert machine.simd_summary(machine.cpu_flags(ARM)) == "NEON SVE"
    assert "no AVX2" in machine.simd_summary(set())


def test_only_the_first_processor_is_read():
    assert "fpu" in machine.cpu_flags(XEON) and "amx_int8" in machine.cpu_flags(XEON)


def test_this_machine_is_described():
    line = machine.describe()
    assert "cores" in line and "SIMD:" in line
    assert set(machine.describe_dict()) == {"cpu", "simd", "cores", "arch", "python"}

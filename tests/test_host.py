"""refquant.host: the CPU recorded with every measurement."""

import io

from refquant import host

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni

processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni
"""


def test_model_and_int8_flags_come_from_cpuinfo(monkeypatch):
    monkeypatch.setattr(host, "open", lambda *a, **k: io.StringIO(CPUINFO), raising=False)
    assert host.cpu_model() == "Example CPU 9000"
    assert {"avx2", "avx512_vnni"} <= host.cpu_flags() and "amx_int8" not in host.cpu_flags()
    summary = host.cpu_summary()
    assert summary.startswith("Example CPU 9000 (") and summary.endswith("avx2 fma avx512f avx512_vnni")


def test_without_cpuinfo_the_platform_names_the_machine(monkeypatch):
    def missing(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(host, "open", missing, raising=False)
    assert host.cpu_flags() == set()
    assert host.cpu_model() and host.cpu_summary().endswith("no int8 SIMD flags read")

"""Machine facts recorded with training runs and benchmarks."""

from __future__ import annotations

import platform

# CPU instructions that decide which ONNX Runtime kernels run: vector width, FP16 and the int8
# dot products (VNNI, AMX, Arm dotprod/i8mm) that make INT8 faster than FP32 at all.
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_int8", "amx_bf16", "asimd", "asimdhp", "asimddp", "i8mm", "sve")
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def _cpuinfo(*keys: str) -> str | None:
    """Value of the first Linux /proc/cpuinfo line starting with one of ``keys``; None if absent."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """CPU model name (Linux /proc/cpuinfo), else what platform reports."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The :data:`KERNEL_FLAGS` this CPU has (/proc/cpuinfo ``flags`` on x86, ``Features`` on Arm),
    sorted; empty where that file is missing."""
    return sorted(set((_cpuinfo("flags", "Features") or "").split()).intersection(KERNEL_FLAGS))

"""One line describing the machine a figure was measured on, for every report (benchmarks and
the training evaluators alike): its CPU model, CPU count, memory and operating system.

Standard library only: the GPU machine runs benchmarks/gpu_check.py with a bare Python that has
none of this project's dependencies beyond PyTorch and numpy.
"""

from __future__ import annotations

import os
import platform
import subprocess


def cpu_model() -> str:
    """`lscpu`'s model name ("AMD EPYC 9R14 Processor"), else what Python knows of the CPU."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                               check=True).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """The widest SIMD the CPU has for the kernels here ("AVX-512 VNNI", "AVX-512", "AVX2";
    "" where /proc/cpuinfo does not say): it moves int8 and float32 speed 2–5× between hosts
    that report the same model name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo
                          if line.startswith("flags")), [])
    except OSError:
        return ""
    for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return ""


def memory_gib() -> float:
    """Physical memory in GiB."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


def describe_machine() -> str:
    """For example "AMD EPYC 9R14 Processor (AVX-512 VNNI), 2 vCPU, 24 GiB,
    Linux-6.1.0-x86_64-with-glibc2.36"."""
    isa = vector_isa()
    return (f"{cpu_model()}{f' ({isa})' if isa else ''}, {os.cpu_count()} vCPU, "
            f"{memory_gib():.0f} GiB, {platform.platform()}")

"""What this machine's matrix multiply can do: the peak a run's model FLOPs utilisation is measured against, and
whether a CPU multiplies in bf16 fast enough to train in it.

Measured, not looked up: a CPU's peak depends on its vector units (avx512_bf16 multiplies bf16 about 4.5× faster
than fp32 on the 2-core machine here, an older CPU emulates bf16 slowly) and on how many threads torch may use.
Each figure is measured once per process, in well under a second.
"""

from __future__ import annotations

import functools
import time

# Square sizes whose multiply is compute-bound on every device we meet: large enough that memory traffic and call
# overhead are small beside the arithmetic, small enough that a 2-core CPU measures them in a tenth of a second.
PROBE_SIZE = {"cpu": 1024, "cuda": 8192, "mps": 4096}
PROBE_REPEATS = 5
# bf16 must beat fp32 by this much before "auto" trains in it on a CPU: autocast adds casts, and the ops that are
# not matrix multiplies (norms, softmax, the optimizer) gain nothing.
CPU_BF16_MIN_SPEEDUP = 2.0
DTYPES = ("fp32", "bf16", "fp16")
# x86 flags of a bf16 dot product in hardware: AVX-512 BF16 (Zen 4+, Cooper Lake, Sapphire Rapids) and AMX.
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def matmul_peak_gflops(device: str, dtype: str) -> float:
    """The best of a few timed square multiplies on `device` ("cpu", "cuda", "mps") in `dtype` ("fp32", "bf16",
    "fp16"), in GFLOP/s: the best, because a busy neighbour only ever slows a multiply down."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    n = PROBE_SIZE.get(device, 1024)
    a = torch.randn(n, n, device=device).to(torch_dtype)
    b = torch.randn(n, n, device=device).to(torch_dtype)
    a @ b                                          # the first call picks kernels and allocates
    best = float("inf")
    for _ in range(PROBE_REPEATS):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 natively, so that training in bf16 autocast is quicker rather than slower.
    Read from the CPU's flags where Linux lists them (a timing would depend on what else runs at that moment, and
    so would a run's precision); elsewhere measured: bf16 at least CPU_BF16_MIN_SPEEDUP × fp32."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    return matmul_peak_gflops("cpu", "bf16") >= CPU_BF16_MIN_SPEEDUP * matmul_peak_gflops("cpu", "fp32")


def cpu_flags() -> set[str] | None:
    """The instruction-set flags of /proc/cpuinfo, or None where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()

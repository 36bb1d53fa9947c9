"""The machine's matmul peak and the CPU bf16 choice that precision "auto" makes from it."""

from pipelines import device_speed
from pipelines.models import auto_precision


def test_the_peak_is_measured_once_per_process_and_is_a_plausible_rate():
    device_speed.matmul_peak_gflops.cache_clear()
    first = device_speed.matmul_peak_gflops("cpu", "fp32")
    assert 1 < first < 100_000
    assert device_speed.matmul_peak_gflops("cpu", "fp32") == first, "cached: measured once"


def test_cpu_bf16_follows_the_cpus_flags_and_is_measured_where_none_are_listed(monkeypatch):
    cases = [({"avx2", "avx512f", "avx512_bf16"}, None, True), ({"avx2", "amx_bf16"}, None, True),
             ({"avx2", "avx512f"}, None, False), (None, (900.0, 200.0), True), (None, (150.0, 200.0), False)]
    for flags, peaks, expected in cases:
        device_speed.cpu_bf16_is_fast.cache_clear()
        monkeypatch.setattr(device_speed, "cpu_flags", lambda flags=flags: flags)
        if peaks:
            monkeypatch.setattr(device_speed, "matmul_peak_gflops",
                                lambda device, dtype, peaks=peaks: peaks[0] if dtype == "bf16" else peaks[1])
        assert device_speed.cpu_bf16_is_fast() is expected, (flags, peaks)
        assert auto_precision("cpu") == ("bf16" if expected else "fp32")
    device_speed.cpu_bf16_is_fast.cache_clear()

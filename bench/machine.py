"""How busy the machine is: benchmarks here share a 2-core box with other work, so they wait for a quiet
moment before each measured process and record how much CPU everything else took while it ran.

Linux only (/proc/stat).
"""

from __future__ import annotations

import os
import platform
import time

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine, all processes, since boot (idle and iowait excluded)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / TICKS_PER_S


def wait_for_quiet(max_wait_s: float, busy_below: float = 0.15, sample_s: float = 1.0) -> dict:
    """Wait until the machine is at most `busy_below` busy over one sample, or `max_wait_s` passed.

    Returns how long we waited and how busy the last sample was (share of all cores, 0..1).
    """
    started = time.monotonic()
    while True:
        before = busy_cpu_seconds()
        time.sleep(sample_s)
        share = (busy_cpu_seconds() - before) / (sample_s * CPUS)
        waited = time.monotonic() - started
        if share <= busy_below or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "busy_before": round(share, 3)}


def others_share(busy_before: float, busy_after: float, own_cpu_s: float, wall_s: float) -> float:
    """Share of all cores (0..1) that other processes used while ours ran."""
    return max(0.0, (busy_after - busy_before - own_cpu_s) / (wall_s * CPUS))


def describe_machine() -> dict:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": CPUS, "cpu_model": model, "memory_gb": round(memory_gb, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def measure_process(command: list[str], log_path, env: dict, cwd) -> dict:
    """Run `command` to completion, its output into `log_path`: wall time, CPU time and peak RSS of this child only
    (from wait4), and the share of the cores other processes used meanwhile. A failure ends the benchmark with the
    tail of the log."""
    import subprocess
    from pathlib import Path

    log_path = Path(log_path)
    with open(log_path, "wb") as log:
        busy_before, started = busy_cpu_seconds(), time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall, busy_after = time.perf_counter() - started, busy_cpu_seconds()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(map(str, command))} failed with exit code {code}:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,   # ru_maxrss is in KiB on Linux
            "others_share": others_share(busy_before, busy_after, cpu, wall)}


def add_quiet_arguments(parser, noisy_reruns: bool = False) -> None:
    """The options every benchmark here shares for keeping other processes' load out of its figures."""
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="Before each measurement, wait up to this many seconds for the cores to be idle.")
    if noisy_reruns:
        parser.add_argument("--max-noise", type=float, default=0.10,
                            help="A measurement during which other processes used more than this share of the cores "
                                 "is run again.")
        parser.add_argument("--retries", type=int, default=2,
                            help="How many times a noisy measurement is run again (the last is kept).")


def chosen_cases(parser, text: str, known) -> list[str]:
    """`--models tiny,bundled` → the cases, or the parser's one-line error for an unknown one."""
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in known]
    if unknown:
        parser.error(f"unknown model case {unknown[0]!r}; choose from {', '.join(known)}")
    return cases

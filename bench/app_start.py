"""How long the studio app takes to start, against a minimal Gradio app started the same way.

Measured from process start to the first HTTP 200 of GET / on 127.0.0.1, for:
    studio, skip prepare   python launch.py --workspace W --port P --skip-model-prepare
    studio, prepare        python launch.py --workspace W --port P   (only when the bundled model is
                           already converted in the cache, so this times the check, not a download)
    peer                   python peer.py --port P: one gr.Blocks with one gr.Markdown, launched on
                           127.0.0.1 like the studio (written inline below)
Each variant runs in a fresh process, in rotation, --repeats times; we report medians, the fastest
start, the ratio studio/peer and the resident memory of the server once it answers. The machine is
shared, so before each start we wait (up to --quiet-wait s) for idle cores and record how much CPU
other processes took meanwhile. Every server is stopped (its whole process group) as soon as it has
answered.

    ALIGNMENT_STUDIO_CACHE=/tmp/cache-test python bench/app_start.py --repeats 3

Writes bench/results/app_start.json. Target: the studio answers within 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, busy_cpu_seconds, describe_machine, others_share, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "app_start.json"
TARGET_S = 5.0
READY_TIMEOUT_S = 180
HOST = "127.0.0.1"

PEER_APP = '''
import argparse
import gradio as gr

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
port = parser.parse_args().port
with gr.Blocks(title="peer") as demo:
    gr.Markdown("# A minimal Gradio app")
demo.launch(server_name="127.0.0.1", server_port=port)
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    """True once GET url returns 200; no proxy, so the request stays on the loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def usage(pid: int) -> tuple[float | None, float]:
    """(resident MB, CPU seconds so far) of the server process; (None, 0) if psutil cannot tell."""
    try:
        import psutil
        process = psutil.Process(pid)
        times = process.cpu_times()
        return process.memory_info().rss / 2**20, times.user + times.system
    except Exception:  # psutil missing or the process already gone: these are side notes here
        return None, 0.0


def stop(process: subprocess.Popen) -> None:
    """End the server we started: SIGTERM to its process group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def time_to_first_200(command: list[str], log_path: Path, port: int) -> dict:
    """Start `command`, poll GET / until 200; seconds from process start, then stop the server."""
    url = f"http://{HOST}:{port}/"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        busy_before, started = busy_cpu_seconds(), time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO_ROOT, env=env, start_new_session=True)
        try:
            while not answers(url):
                if process.poll() is not None:
                    raise SystemExit(f"{' '.join(command)} exited with {process.returncode} before answering; "
                                     f"see {log_path}:\n{log_path.read_text(errors='replace')[-2000:]}")
                if time.perf_counter() - started > READY_TIMEOUT_S:
                    raise SystemExit(f"{' '.join(command)} did not answer within {READY_TIMEOUT_S} s; see {log_path}")
                time.sleep(0.05)
            seconds, busy_after = time.perf_counter() - started, busy_cpu_seconds()
            rss_mb, cpu_s = usage(process.pid)
            return {"seconds": seconds, "rss_mb": rss_mb, "cpu_s": cpu_s,
                    "others_share": others_share(busy_before, busy_after, cpu_s, seconds)}
        finally:
            stop(process)


def model_cached() -> bool:
    from pipelines.bundled import MODEL_DIR_NAME
    from pipelines.paths import cache_dir
    return (cache_dir() / "models" / MODEL_DIR_NAME / "config.json").is_file()


def variants(scratch: Path) -> dict:
    """Name -> function(port, workspace) giving the command line of one start; the peer comes last."""
    peer = scratch / "peer.py"
    peer.write_text(PEER_APP, encoding="utf-8")
    def studio(*extra: str):
        return lambda port, ws: [sys.executable, str(REPO_ROOT / "launch.py"), "--workspace", ws, "--port", str(port), *extra]

    chosen = {
        "studio, --skip-model-prepare": studio("--skip-model-prepare"),
        "studio, model prepare (cached)": studio(),
        "peer: gr.Blocks + one Markdown": lambda port, ws: [sys.executable, str(peer), "--port", str(port)],
    }
    if not model_cached():
        print("the bundled model is not in the cache yet: skipping the 'model prepare' variant "
              "(run `python -m pipelines prepare-model` first, or set ALIGNMENT_STUDIO_CACHE)")
        del chosen["studio, model prepare (cached)"]
    return chosen


def run(repeats: int, quiet_wait_s: float, scratch: Path) -> dict[str, list[dict]]:
    """Every variant once per round, in the same order, each in a fresh process, workspace and port."""
    commands = variants(scratch)
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for rep in range(repeats):
        for index, (name, command_for) in enumerate(commands.items()):
            quiet = wait_for_quiet(quiet_wait_s)
            port = free_port()
            command = command_for(port, str(scratch / f"workspace-{rep}-{index}"))
            result = {**time_to_first_200(command, scratch / f"start-{rep}-{index}.log", port), **quiet}
            samples[name].append(result)
            print(f"  #{rep + 1} {name}: {result['seconds']:.2f} s, {result['rss_mb'] or 0:.0f} MB; other processes "
                  f"used {result['others_share']:.0%} of the cores meanwhile (waited {quiet['waited_s']:.0f} s for quiet)",
                  flush=True)
    return samples


def summarise(samples: dict[str, list[dict]]) -> dict:
    peer_name = next(name for name in samples if name.startswith("peer"))
    peer = statistics.median(r["seconds"] for r in samples[peer_name])
    summary = {}
    for name, rows in samples.items():
        seconds = statistics.median(r["seconds"] for r in rows)
        memory = [r["rss_mb"] for r in rows if r["rss_mb"] is not None]
        summary[name] = {"median_s": seconds, "min_s": min(r["seconds"] for r in rows), "ratio_to_peer": seconds / peer,
                         "rss_mb": statistics.median(memory) if memory else None, "within_target": seconds <= TARGET_S}
    return summary


def markdown(summary: dict, repeats: int) -> str:
    lines = [f"| app start (median of {repeats}) | to first 200 (s) | fastest (s) | ÷ peer | RSS when ready (MB) | ≤ {TARGET_S:.0f} s |",
             "|---|---:|---:|---:|---:|:-:|"]
    for name, row in summary.items():
        memory = f"{row['rss_mb']:.0f}" if row["rss_mb"] is not None else "?"
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['ratio_to_peer']:.2f} | {memory} "
                     f"| {'✓' if row['within_target'] else '✗'} |")
    return "\n".join(lines)


def write_results(summary: dict, samples: dict, repeats: int) -> None:
    import gradio

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "repeats": repeats,
                "machine": describe_machine(),
                "versions": {"gradio": gradio.__version__}, "target_s": TARGET_S, "summary": summary, "samples": samples}
    RESULTS.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Starts per variant, in rotation.")
    add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="app-start-") as scratch:
        samples = run(args.repeats, args.quiet_wait, Path(scratch))
    summary = summarise(samples)
    print()
    print(markdown(summary, args.repeats))
    write_results(summary, samples, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

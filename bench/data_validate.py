"""Validating and normalising an uploaded preference file, against plain `datasets.load_dataset("json", ...)`.

A generated (seeded) JSONL of --rows preference rows {"prompt", "chosen", "rejected"} (strings, or with
--shape messages one-turn message lists) is written to a scratch folder outside the repository, then read,
each side in its own fresh Python process, alternating (studio, peer, studio, peer, ...):

    studio   pipelines.data.files.read_records(path), then pipelines.data.store.normalise_records(records):
             what the app does with an upload before it saves it: read and parse the file, detect the
             kind, check every row, normalise it to TRL's conversational shape, quality warnings
             (duplicates, a chosen/rejected length bias). Checked: kind "preference", every row kept,
             no row errors.
    peer     datasets.load_dataset("json", data_files=path, split="train", cache_dir=<a fresh folder>):
             pyarrow's JSON reader plus the Arrow file written to the cache (a fresh cache every run,
             so it really parses; HF_DATASETS_OFFLINE=1). Checked: the same number of rows and columns.

Both are one process. The studio side is single-threaded Python; pyarrow's reader uses a thread pool
as big as the machine, so the peer runs once with that pool limited to one thread (pyarrow.set_cpu_count(1),
the comparison the target is judged on) and, for information, once with pyarrow's default pool
(--peer-threads picks which; in practice both keep one core busy: datasets hands pyarrow 10 MB batches as
a single block each). Each child reports the time of the work alone (after its imports), the
CPU time that work took (so CPU ÷ wall says how many cores it kept busy), its thread count and resident
memory after the imports; the driver measures the whole process (wall time, user + system CPU, peak RSS
from os.wait4's ru_maxrss). Before each run we wait (up to --quiet-wait s) for idle cores and record the
share of the cores other processes used meanwhile, as the other benchmarks here do.

    python bench/data_validate.py                      # 100k string rows, 3 runs per side
    python bench/data_validate.py --shape messages --repeats 5

Prints markdown tables (medians; rows/s; ratios studio/peer) and merges the numbers, per --shape, into
bench/results/data_validate.json.
Target (issue): the studio within 2x the peer's time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, describe_machine, measure_process, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "data_validate.json"
TARGET_RATIO = 2.0
STUDIO = "studio"
COLUMNS = ("prompt", "chosen", "rejected")

# The child processes: each writes one JSON result. They import nothing from bench/, only what their side needs.
CHILD_PREAMBLE = '''
import json, os, sys, time

def status(field):
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

def finish(result_path, imports_s, work_s, work_cpu_s, rss_after_imports_kb, **extra):
    result = {"imports_s": imports_s, "work_s": work_s, "work_cpu_s": work_cpu_s,
              "rss_after_imports_mb": rss_after_imports_kb / 1024, "peak_rss_self_mb": status("VmHWM") / 1024,
              "threads": status("Threads"), **extra}
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
'''

STUDIO_CHILD = CHILD_PREAMBLE + '''
path, expected, result_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
from pipelines.data.files import read_records
from pipelines.data.store import normalise_records
imported, rss = time.perf_counter(), status("VmRSS")
cpu0 = time.process_time()
records = read_records(path)
read = time.perf_counter()
kind, result = normalise_records(records)
done, cpu1 = time.perf_counter(), time.process_time()
assert kind == "preference", kind
assert not result.errors, [str(e) for e in result.errors[:3]]
assert len(result.rows) == expected, (len(result.rows), expected)
assert set(result.rows[0]) == {"prompt", "chosen", "rejected"}, sorted(result.rows[0])
finish(result_path, imported - started, done - imported, cpu1 - cpu0, rss, rows=len(result.rows),
       read_s=read - imported, normalise_s=done - read, kind=kind, format=result.format,
       errors=len(result.errors), warnings=result.warnings)
'''

PEER_CHILD = CHILD_PREAMBLE + '''
path, expected, result_path, cache_dir, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
started = time.perf_counter()
import pyarrow
if threads:
    pyarrow.set_cpu_count(threads)
import datasets
imported, rss = time.perf_counter(), status("VmRSS")
cpu0 = time.process_time()
dataset = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)
done, cpu1 = time.perf_counter(), time.process_time()
assert len(dataset) == expected, (len(dataset), expected)
assert set(dataset.column_names) == {"prompt", "chosen", "rejected"}, dataset.column_names
cache_bytes = sum(p.stat().st_size for p in __import__("pathlib").Path(cache_dir).rglob("*.arrow"))
finish(result_path, imported - started, done - imported, cpu1 - cpu0, rss, rows=len(dataset),
       arrow_threads=pyarrow.cpu_count(), cache_arrow_mb=cache_bytes / 2**20, num_proc=None)
'''


# --- the data ------------------------------------------------------------------------------------

WORDS = ("the a an of to in and or but because so if when while after before model answer question data "
         "training reward policy gradient token sequence language human assistant helpful harmless honest "
         "explain example result method value function system process energy water light city history "
         "science music river mountain market budget recipe garden travel health sleep exercise memory "
         "simple careful quickly usually often rarely clearly important different similar possible likely "
         "is are was were be has have had can could should would will may might must does did make take "
         "give find think know see use work call try ask need feel become leave put mean keep let begin "
         "42 1990 3.14 100% e.g. i.e. (see above) it's don't \"quoted\"").split()
# Most generated text is ASCII; about one text in six gets one of these (accents, curly quotes, CJK, emoji).
# It matters for memory: a Python string holding any character above U+00FF stores 2-4 bytes per character.
UNICODE_WORDS = ("café", "naïve", "über", "résumé", "façade", "jalapeño", "“quoted”", "it’s", "—", "東京", "数据",
                 "Привет", "🙂", "✓", "±0.5 °C")
UNICODE_SHARE = 0.15
ASKS = ("Explain", "Summarise", "Write a short note about", "Give three tips on", "What is", "Compare",
        "Describe", "How do I", "Why does", "List the steps for")


def corpus(rng: random.Random, chars: int) -> str:
    """A long run of random words in sentences, to cut every text from (cheap, and no two cuts alike)."""
    parts, size = [], 0
    while size < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 22))]
        sentence = " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!")) + rng.choice((" ", " ", " ", "\n"))
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)


def cut(rng: random.Random, text: str, low: int, high: int) -> str:
    length = rng.randint(low, high)
    start = rng.randrange(0, len(text) - length - 1)
    piece = text[start:start + length].strip() or "empty"
    if rng.random() < UNICODE_SHARE:
        at = rng.randrange(len(piece) + 1)
        piece = f"{piece[:at]} {rng.choice(UNICODE_WORDS)} {piece[at:]}".strip()
    return piece


def generate(path: Path, rows: int, shape: str, seed: int) -> dict:
    """Write `rows` preference rows: prompts about 50–300 characters, chosen and rejected answers about
    200–1500 each (independent, so no length bias), mostly ASCII (UNICODE_SHARE of the texts hold one
    non-ASCII word); as strings, or with --shape messages as one-turn message lists."""
    rng = random.Random(seed)
    text = corpus(rng, 4_000_000)
    lengths = {"prompt": [], "chosen": [], "rejected": []}
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(rows):
            prompt = f"{rng.choice(ASKS)} {cut(rng, text, 40, 290)}"
            chosen, rejected = cut(rng, text, 200, 1500), cut(rng, text, 200, 1500)
            for key, value in zip(COLUMNS, (prompt, chosen, rejected)):
                lengths[key].append(len(value))
            if shape == "messages":
                row = {"prompt": [{"role": "user", "content": prompt}],
                       "chosen": [{"role": "assistant", "content": chosen}],
                       "rejected": [{"role": "assistant", "content": rejected}]}
            else:
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"rows": rows, "shape": shape, "seed": seed, "bytes": path.stat().st_size,
            "mb": round(path.stat().st_size / 2**20, 1),
            "chars": {k: {"min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in lengths.items()}}


# --- one measured process ------------------------------------------------------------------------

def measure(command: list[str], log_path: Path, result_path: Path, env_extra: dict) -> dict:
    """Run `command` to completion: wall time, CPU time and peak RSS (this child only, from wait4), plus
    what the child reported about its own work."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT), **env_extra}
    measured = measure_process(command, log_path, env, REPO_ROOT)
    child = json.loads(result_path.read_text(encoding="utf-8"))
    return {**measured, **child,
            "rows_per_s": child["rows"] / child["work_s"], "cores_used": child["work_cpu_s"] / child["work_s"],
            "work_rss_mb": measured["peak_rss_mb"] - child["rss_after_imports_mb"]}


def peer_name(threads: int) -> str:
    return f"peer, {threads} arrow thread{'s' if threads != 1 else ''}" if threads else "peer, arrow default threads"


def variants(data: Path, rows: int, size: int, peer_threads: list[int], scratch: Path) -> dict:
    """Name -> function(run folder) giving (command, result file, extra environment) of one run."""
    (scratch / "studio_child.py").write_text(STUDIO_CHILD, encoding="utf-8")
    (scratch / "peer_child.py").write_text(PEER_CHILD, encoding="utf-8")
    hf_home = scratch / "hf-home"  # nothing read from or written to the user's Hugging Face cache
    limit_mb = int(os.environ.get("ALIGNMENT_STUDIO_MAX_UPLOAD_MB", "200"))
    studio_env = {}
    if size > limit_mb * 2**20:  # the app would refuse the file; raise the limit so the benchmark can time it
        studio_env["ALIGNMENT_STUDIO_MAX_UPLOAD_MB"] = str(size // 2**20 + 1)
        print(f"note: the file is over the {limit_mb} MB upload limit; the studio side runs with "
              f"ALIGNMENT_STUDIO_MAX_UPLOAD_MB={studio_env['ALIGNMENT_STUDIO_MAX_UPLOAD_MB']}")

    def studio(folder: Path):
        result = folder / "result.json"
        return [sys.executable, str(scratch / "studio_child.py"), str(data), str(rows), str(result)], result, studio_env

    def peer(threads: int):
        def command(folder: Path):
            result = folder / "result.json"
            env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
            return ([sys.executable, str(scratch / "peer_child.py"), str(data), str(rows), str(result),
                     str(folder / "cache"), str(threads)], result, env)
        return command

    return {STUDIO: studio, **{peer_name(t): peer(t) for t in peer_threads}}


# --- the benchmark -------------------------------------------------------------------------------

def warm_up(data: Path) -> None:
    """Untimed: read the file once (page cache) and import both sides' libraries (bytecode, file cache)."""
    with open(data, "rb") as f:
        while f.read(1 << 24):
            pass
    subprocess.run([sys.executable, "-c", "import pipelines.data.store, pipelines.data.preference, datasets, pyarrow.json"],
                   check=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_DATASETS_OFFLINE": "1"})


def run(commands: dict, repeats: int, quiet_wait_s: float, scratch: Path) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for rep in range(repeats):
        for index, (name, command_for) in enumerate(commands.items()):
            folder = scratch / f"run-{rep}-{index}"
            folder.mkdir()
            command, result_path, env = command_for(folder)
            quiet = wait_for_quiet(quiet_wait_s)
            result = {**measure(command, folder / "stdout.log", result_path, env), **quiet}
            shutil.rmtree(folder / "cache", ignore_errors=True)  # ~ the file's size again, per peer run
            samples[name].append(result)
            print(f"  #{rep + 1} {name}: work {result['work_s']:.2f} s ({result['rows_per_s']:,.0f} rows/s, "
                  f"{result['cores_used']:.2f} cores), whole process {result['wall_s']:.2f} s, "
                  f"peak {result['peak_rss_mb']:.0f} MB; other processes used {result['others_share']:.0%} "
                  f"of the cores meanwhile (waited {quiet['waited_s']:.0f} s for quiet)", flush=True)
    return samples


METRICS = ("work_s", "rows_per_s", "cores_used", "wall_s", "cpu_s", "imports_s", "peak_rss_mb", "work_rss_mb",
           "rss_after_imports_mb", "threads")


def summarise(samples: dict[str, list[dict]]) -> dict:
    median = {name: {m: statistics.median(r[m] for r in rows) for m in METRICS} for name, rows in samples.items()}
    for name, rows in samples.items():
        median[name]["min_work_s"] = min(r["work_s"] for r in rows)
        if name == STUDIO:
            median[name]["read_s"] = statistics.median(r["read_s"] for r in rows)
            median[name]["normalise_s"] = statistics.median(r["normalise_s"] for r in rows)
    studio = median[STUDIO]
    ratios = {name: {"work_s": studio["work_s"] / m["work_s"], "wall_s": studio["wall_s"] / m["wall_s"],
                     "cpu_s": studio["cpu_s"] / m["cpu_s"], "peak_rss_mb": studio["peak_rss_mb"] / m["peak_rss_mb"],
                     "work_rss_mb": studio["work_rss_mb"] / m["work_rss_mb"] if m["work_rss_mb"] > 0 else None,
                     "within_target": studio["work_s"] <= TARGET_RATIO * m["work_s"]}
              for name, m in median.items() if name != STUDIO}
    return {"median": median, "studio_over_peer": ratios}


def markdown(summary: dict, data: dict, repeats: int) -> str:
    median, ratios = summary["median"], summary["studio_over_peer"]
    lines = [f"{data['rows']:,} preference rows ({data['shape']}), {data['mb']} MB JSONL; median of {repeats} runs per side; "
             "every side one process (load_dataset's num_proc=None); 'cores busy' = CPU ÷ wall time of the work", "", "| side | work (s) | rows/s | cores busy | whole process (s) | CPU (s) | peak RSS (MB) | RSS added by the work (MB) | threads |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in median.items():
        lines.append(f"| {name} | {m['work_s']:.2f} | {m['rows_per_s']:,.0f} | {m['cores_used']:.2f} | {m['wall_s']:.2f} "
                     f"| {m['cpu_s']:.2f} | {m['peak_rss_mb']:.0f} | {m['work_rss_mb']:.0f} | {m['threads']:.0f} |")
    studio = median[STUDIO]
    lines += ["", f"Studio work = read_records {studio['read_s']:.2f} s + normalise_records {studio['normalise_s']:.2f} s.",
              "", f"| studio ÷ peer | work time | whole process | CPU | peak RSS | RSS added by the work | work ≤ {TARGET_RATIO:.0f}× |",
              "|---|---:|---:|---:|---:|---:|:-:|"]
    for name, r in ratios.items():
        added = f"{r['work_rss_mb']:.2f}" if r["work_rss_mb"] is not None else "–"
        lines.append(f"| ÷ {name} | {r['work_s']:.2f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.2f} "
                     f"| {added} | {'✓' if r['within_target'] else '✗'} |")
    return "\n".join(lines)


def write_results(summary: dict, samples: dict, data: dict, repeats: int, peer_threads: list[int]) -> None:
    """Merge this shape into bench/results/data_validate.json, so a `--shape messages` run keeps the strings numbers."""
    import datasets
    import pyarrow

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    case = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "repeats": repeats, "data": data,
            "peer_threads": peer_threads, **summary, "samples": samples}
    document = {"machine": describe_machine(), "versions": {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__},
                "target_ratio": TARGET_RATIO, "cases": {**previous.get("cases", {}), data["shape"]: case}}
    RESULTS.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


def parse_threads(text: str) -> list[int]:
    return [0 if part.strip() == "all" else int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Preference rows in the generated file.")
    parser.add_argument("--shape", choices=("strings", "messages"), default="strings",
                        help="prompt/chosen/rejected as strings, or as one-turn message lists.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated file.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side, alternating studio and peer(s).")
    parser.add_argument("--peer-threads", default="1,all",
                        help="Peer variants by pyarrow thread-pool size, comma-separated; 'all' = pyarrow's default "
                             "(every core). The first is the one the target is judged against.")
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (the data file, logs).")
    args = parser.parse_args(argv)
    peer_threads = parse_threads(args.peer_threads)
    if not peer_threads:
        parser.error("--peer-threads names no peer")
    scratch = Path(tempfile.mkdtemp(prefix="data-validate-"))
    try:
        path = scratch / f"preference-{args.shape}.jsonl"
        started = time.perf_counter()
        data = generate(path, args.rows, args.shape, args.seed)
        print(f"generated {data['rows']:,} rows ({data['shape']}, {data['mb']} MB) in {time.perf_counter() - started:.1f} s: "
              f"{path}", flush=True)
        warm_up(path)
        commands = variants(path, args.rows, data["bytes"], peer_threads, scratch)
        print(f"{args.repeats} × ({', '.join(commands)})", flush=True)
        samples = run(commands, args.repeats, args.quiet_wait, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(samples)
    print()
    print(markdown(summary, data, args.repeats))
    write_results(summary, samples, data, args.repeats, peer_threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

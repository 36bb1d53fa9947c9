"""Running on a Hugging Face Space: where to listen, how many CPUs there are, and where files survive a restart.

A Space runs `python launch.py` in a container whose disk is ephemeral: what the app writes there is gone when the
Space restarts or wakes from sleep. Persistence is a volume the owner attaches (a storage bucket, mounted read-write
at a path they choose; older Spaces had persistent storage at /data). So the app asks the mount table whether the
workspace sits on such a volume, puts its caches there when it does, and says plainly when it does not.
Locally none of this applies: `on_space()` is False and launch.py keeps its own defaults.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SPACE_VOLUME = Path("/data")   # the mount path Hugging Face's examples use for a bucket (and old persistent storage)
WORKSPACE_ENV = "ALIGNMENT_STUDIO_WORKSPACE"
# File systems that are not a volume one attaches: kernel views, RAM (lost on restart like the container's own
# disk), and the container's layered root.
NOT_A_VOLUME = {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "overlay", "aufs", "cgroup", "cgroup2",
                "mqueue", "securityfs", "debugfs", "tracefs", "pstore", "bpf", "autofs", "binfmt_misc", "configfs",
                "fusectl", "hugetlbfs", "nsfs", "squashfs"}


def on_space() -> bool:
    """Whether this process runs on a Hugging Face Space (the Space sets SPACE_ID to "owner/name")."""
    return bool(os.environ.get("SPACE_ID"))


def bind_address() -> tuple[str, int]:
    """Host and port on a Space. The Space tells Gradio where to listen through GRADIO_SERVER_NAME and
    GRADIO_SERVER_PORT; its proxy reaches the container on 0.0.0.0:7860, the default when they are not set."""
    host = os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    port = os.environ.get("GRADIO_SERVER_PORT") or "7860"
    return host, int(port)


def cpu_count(cgroup_root: Path | None = None) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota. A Space's container sees all of
    the host's cores but is allowed only its share (2 vCPU on the free tier); torch, left alone, starts a thread per
    host core and spends the time switching between them."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root or CGROUP_ROOT)
    return max(1, min(available, math.ceil(quota))) if quota else available


def _cgroup_quota(root: Path) -> float | None:
    """CPUs granted by the cgroup (v2 cpu.max "200000 100000" → 2.0; v1 cfs_quota_us / cfs_period_us), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period) if int(quota) > 0 else None


def memory(cgroup_root: Path | None = None) -> tuple[int, int]:
    """(total, available) bytes of memory for this process: the machine's, capped by a cgroup memory limit. In a
    container (a Space, Docker) psutil sees the host's memory, and a model cache or a run sized to it gets the
    container killed; the limit is what counts."""
    import psutil

    machine = psutil.virtual_memory()
    total, available = machine.total, machine.available
    root = cgroup_root or CGROUP_ROOT
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < total:   # "max", or v1's huge number for none: no limit
            total, available = int(limit), min(available, max(int(limit) - usage, 0))
        break
    return total, available


def use_cpu_count(count: int) -> None:
    """Have torch (the app's and every training process's: they inherit the environment) use `count` threads,
    unless the operator set OMP_NUM_THREADS. Must run before torch is imported."""
    os.environ.setdefault("OMP_NUM_THREADS", str(count))


def storage_volume(workspace: Path, mountinfo: Path | None = None) -> Path | None:
    """The mounted volume the workspace sits on (its nearest mount point above it), or None when that is the
    container's own root file system, a RAM disk, or a read-only mount: files written there do not outlive it."""
    target = Path(workspace).resolve()
    mounts = _mounts(mountinfo or MOUNTINFO)
    if mounts is None:   # no mount table (not Linux): the nearest mount point, found by walking up
        point = next(p for p in (target, *target.parents) if os.path.ismount(p))
        return None if point == Path(point.anchor) else point
    nearest, fstype, writable = Path("/"), "", False
    for point, (kind, rw) in mounts.items():   # in mount order: a later mount on the same point hides the earlier
        if target.is_relative_to(point) and len(point.parts) >= len(nearest.parts):
            nearest, fstype, writable = point, kind, rw
    if nearest == Path("/") or fstype in NOT_A_VOLUME or not writable:
        return None
    return nearest


def _mounts(mountinfo: Path) -> dict[Path, tuple[str, bool]] | None:
    """{mount point: (file system type, writable)} from a /proc/<pid>/mountinfo table, or None if unreadable.
    A line: `id parent major:minor root mount-point options [optional fields] - fstype source super-options`."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    mounts: dict[Path, tuple[str, bool]] = {}
    for line in lines:
        fields = line.split()
        if "-" not in fields or len(fields) < 6:
            continue
        after = fields[fields.index("-") + 1:]
        point = Path(_unescape(fields[4]))
        mounts.pop(point, None)   # re-inserted last: the later mount is the one seen
        mounts[point] = (after[0] if after else "", "rw" in fields[5].split(","))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def default_workspace() -> Path:
    """Where runs and datasets go when --workspace is not given: ALIGNMENT_STUDIO_WORKSPACE (a Space variable, for a
    bucket mounted elsewhere); on a Space with a volume at /data, /data/workspace; else ./workspace."""
    if os.environ.get(WORKSPACE_ENV):
        return Path(os.environ[WORKSPACE_ENV])
    if on_space() and storage_volume(SPACE_VOLUME) == SPACE_VOLUME:
        return SPACE_VOLUME / "workspace"
    return Path("workspace")


def launch_defaults() -> dict[str, object]:
    """launch.py's defaults for --host, --port and --workspace: on a Space, where the Space says to listen and
    the workspace on its volume; locally, only the workspace (./workspace unless ALIGNMENT_STUDIO_WORKSPACE)."""
    defaults: dict[str, object] = {"workspace": str(default_workspace())}
    if on_space():
        defaults["host"], defaults["port"] = bind_address()
    return defaults


def start_on_space(workspace: Path) -> str:
    """What launch.py does first on a Space, before torch or huggingface_hub is imported: threads to the Space's
    CPUs, caches onto the volume. Returns a line for the log saying where the files go."""
    from pipelines.messages import Message

    cpus = cpu_count()
    use_cpu_count(cpus)
    volume = storage_volume(workspace)
    moved = use_volume_for_caches(volume)
    if volume is None:
        return f"Space with {cpus} CPUs. {Message('space.no_volume')}"   # the log is English
    caches = f"; caches there too ({', '.join(moved)})" if moved else ""
    return f"Space with {cpus} CPUs; the workspace {Path(workspace).resolve()} is on the volume {volume}{caches}."


def use_volume_for_caches(volume: Path | None) -> dict[str, str]:
    """Put the Hugging Face cache (HF_HOME) and the studio's model cache (ALIGNMENT_STUDIO_CACHE, the converted
    bundled model) on the volume, so a restarted Space does not download and convert them again. A variable the
    operator set is kept. Must run before huggingface_hub is imported (it reads HF_HOME once). Returns what it set."""
    if volume is None:
        return {}
    wanted = {"HF_HOME": volume / ".huggingface", "ALIGNMENT_STUDIO_CACHE": volume / ".cache" / "alignment-studio"}
    chosen = {name: str(path) for name, path in wanted.items() if not os.environ.get(name)}
    os.environ.update(chosen)
    return chosen

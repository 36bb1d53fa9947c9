"""On a Hugging Face Space: where the app listens, how many threads torch gets, whether the workspace sits on a
volume (and the caches with it), the banner when it does not, and the README's Space configuration."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import space
from pipelines.space import (bind_address, cpu_count, default_workspace, launch_defaults, on_space, start_on_space,
                             storage_volume, use_volume_for_caches)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SPACE_ENV = ("SPACE_ID", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "HF_HOME", "ALIGNMENT_STUDIO_CACHE",
             "ALIGNMENT_STUDIO_WORKSPACE", "OMP_NUM_THREADS")


@pytest.fixture
def env(monkeypatch):
    """A clean slate of the variables a Space sets or the app sets on one."""
    for name in SPACE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def mountinfo(tmp_path, *mounts: tuple[str, str, str]) -> Path:
    """A /proc/self/mountinfo table of (mount point, options, fstype), with an overlay root first as in a container."""
    lines = ["1 0 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w",
             "2 1 0:41 / /proc rw,nosuid - proc proc rw"]
    lines += [f"{i} 1 0:{50 + i} / {point} {options} shared:{i} - {fstype} src{i} rw"
              for i, (point, options, fstype) in enumerate(mounts, start=3)]
    table = tmp_path / "mountinfo"
    table.write_text("\n".join(lines) + "\n")
    return table


def test_a_space_is_told_by_space_id_and_says_where_to_listen(env):
    assert not on_space()
    env.setenv("SPACE_ID", "someone/alignment-studio")
    assert on_space()
    assert bind_address() == ("0.0.0.0", 7860), "a Space's proxy reaches 0.0.0.0:7860 when it sets nothing"
    env.setenv("GRADIO_SERVER_NAME", "::")
    env.setenv("GRADIO_SERVER_PORT", "7861")
    assert bind_address() == ("::", 7861)


def test_launch_takes_the_spaces_address_and_a_local_launch_is_unchanged(env):
    from launch import parse_args

    local = parse_args([])
    assert (local.host, local.port, local.workspace) == ("127.0.0.1", 7860, "workspace")
    env.setenv("SPACE_ID", "someone/alignment-studio")
    env.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    env.setenv("GRADIO_SERVER_PORT", "7861")
    assert launch_defaults() == {"host": "0.0.0.0", "port": 7861, "workspace": "workspace"}
    args = parse_args(["--auth", "a:b"])   # a login, whatever hosted mode decides about binding without one
    assert (args.host, args.port) == ("0.0.0.0", 7861)
    assert parse_args(["--auth", "a:b", "--port", "9000"]).port == 9000, "a flag still wins over the Space"


def test_launch_reads_its_arguments_before_torch_or_the_hub_library_is_imported():
    """start_on_space sets OMP_NUM_THREADS and HF_HOME after parse_args: both are read once, at import."""
    code = ("import sys, launch; launch.parse_args([]); "
            "print(sorted(m for m in ('torch', 'huggingface_hub', 'transformers') if m in sys.modules))")
    env = {**os.environ, "SPACE_ID": "someone/alignment-studio", "ALIGNMENT_STUDIO_AUTH": "a:b"}
    imported = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_the_cpu_count_follows_the_cgroup_quota_not_the_hosts_cores(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_count(v2) == affinity, "no quota: every CPU of the affinity"
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert cpu_count(v2) == 1, "half a CPU still gets one thread"
    (v2 / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")
    assert cpu_count(v2) == affinity, "a quota above the affinity is capped by it"
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_count(v1.parent) == affinity
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    assert cpu_count(v1.parent) == 1
    assert cpu_count(tmp_path / "no-cgroup") == affinity


def test_a_folder_on_the_containers_own_disk_is_on_no_volume(tmp_path):
    above = [p for p in tmp_path.resolve().parents if p != Path("/") and os.path.ismount(p)]
    if above:
        pytest.skip(f"{tmp_path} lies on the mount {above[0]} on this machine")
    assert storage_volume(tmp_path) is None


def test_the_volume_is_the_nearest_writable_mount_above_the_workspace(tmp_path):
    table = mountinfo(tmp_path, ("/data", "rw,relatime", "fuse"), ("/models", "ro,relatime", "fuse"),
                      ("/tmp", "rw,nosuid", "tmpfs"), ("/mnt/my\\040bucket", "rw", "fuse"), ("/srv", "rw", "ext4"),
                      ("/srv/old", "rw", "ext4"), ("/srv/old", "ro", "ext4"))
    assert storage_volume(Path("/data/workspace"), table) == Path("/data")
    assert storage_volume(Path("/data"), table) == Path("/data"), "the mount point itself"
    assert storage_volume(Path("/dataset/workspace"), table) is None, "a name that only starts like a mount"
    assert storage_volume(Path("/home/user/app/workspace"), table) is None, "the container's overlay root"
    assert storage_volume(Path("/models/workspace"), table) is None, "a read-only mount (a model repo)"
    assert storage_volume(Path("/tmp/workspace"), table) is None, "RAM, gone on restart too"
    assert storage_volume(Path("/mnt/my bucket/ws"), table) == Path("/mnt/my bucket"), "escaped names are read"
    assert storage_volume(Path("/srv/new"), table) == Path("/srv")
    assert storage_volume(Path("/srv/old/ws"), table) is None, "the later mount over /srv/old is read-only"


def test_the_workspace_goes_on_the_volume_on_a_space(env, tmp_path):
    env.setattr(space, "MOUNTINFO", mountinfo(tmp_path, ("/data", "rw", "fuse")))
    assert default_workspace() == Path("workspace"), "locally: ./workspace, whatever is mounted"
    env.setenv("SPACE_ID", "someone/alignment-studio")
    assert default_workspace() == Path("/data/workspace")
    env.setenv("ALIGNMENT_STUDIO_WORKSPACE", "/bucket/studio")
    assert default_workspace() == Path("/bucket/studio"), "an operator's choice wins"
    env.delenv("ALIGNMENT_STUDIO_WORKSPACE")
    env.setattr(space, "MOUNTINFO", mountinfo(tmp_path))
    assert default_workspace() == Path("workspace"), "no volume: ./workspace, and the banner says so"


def test_the_caches_move_onto_the_volume_unless_the_operator_chose(env, tmp_path):
    from pipelines.paths import cache_dir

    assert use_volume_for_caches(None) == {} and "HF_HOME" not in os.environ
    env.setenv("HF_HOME", "/chosen/hf")
    assert use_volume_for_caches(tmp_path) == {"ALIGNMENT_STUDIO_CACHE": str(tmp_path / ".cache" / "alignment-studio")}
    assert os.environ["HF_HOME"] == "/chosen/hf"
    assert cache_dir() == tmp_path / ".cache" / "alignment-studio", "the bundled model is converted there"


def test_starting_on_a_space_with_a_volume_puts_threads_and_the_hub_cache_in_place(env, tmp_path):
    volume = tmp_path / "bucket"
    env.setattr(space, "MOUNTINFO", mountinfo(tmp_path, (str(volume), "rw,relatime", "fuse.hf-mount")))
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "cpu.max").write_text("100000 100000\n")   # one CPU, whatever the host has
    env.setattr(space, "CGROUP_ROOT", tmp_path / "cgroup")
    env.setenv("SPACE_ID", "someone/alignment-studio")
    line = start_on_space(volume / "workspace")
    assert str(volume) in line and os.environ["OMP_NUM_THREADS"] == "1"
    # torch and huggingface_hub read these as they are imported: a process started with this environment (a
    # training run inherits it) uses one thread and caches on the volume
    code = "import torch, huggingface_hub.constants as c; print(torch.get_num_threads(), c.HF_HUB_CACHE)"
    threads, hub_cache = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                        env=dict(os.environ)).stdout.split()
    assert threads == "1" and Path(hub_cache).is_relative_to(volume)


def test_starting_on_a_space_without_a_volume_says_so_in_the_log(env, tmp_path):
    env.setattr(space, "MOUNTINFO", mountinfo(tmp_path))
    env.setenv("SPACE_ID", "someone/alignment-studio")
    line = start_on_space(tmp_path / "workspace")
    assert "lost when it restarts" in line and "HF_HOME" not in os.environ


def test_the_readme_front_matter_configures_a_gradio_space_that_runs_launch_py():
    import gradio
    from huggingface_hub import SpaceCard, SpaceHardware

    card = SpaceCard.load(REPO / "README.md").data
    assert card.sdk == "gradio" and card.hf_oauth is True
    assert card.sdk_version == gradio.__version__, "the Space installs this Gradio: keep it the one the tests run"
    assert (REPO / card.app_file).is_file() and card.app_file == "launch.py"
    assert card.suggested_hardware in {hardware.value for hardware in SpaceHardware}
    assert isinstance(card.python_version, str) and re.fullmatch(r"3\.\d+", card.python_version)
    assert int(card.python_version.split(".")[1]) >= 10, "pyproject.toml requires Python 3.10 or later"
    assert card.title and card.emoji and len(card.short_description) <= 60


def test_the_space_installs_the_same_dependencies_as_pyproject():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (REPO / "requirements.txt").read_text().splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert required == declared


def test_the_banner_is_built_only_on_a_space_without_a_volume(env, tmp_path):
    import gradio as gr

    from studio.banner import storage_banner

    env.setattr(space, "MOUNTINFO", mountinfo(tmp_path, (str(tmp_path / "bucket"), "rw", "fuse")))
    with gr.Blocks():
        assert storage_banner(tmp_path / "disk") is None, "not on a Space"
        env.setenv("SPACE_ID", "someone/alignment-studio")
        assert storage_banner(tmp_path / "bucket" / "workspace") is None, "on a Space with a volume"
        banner = storage_banner(tmp_path / "disk")
    assert isinstance(banner, gr.Markdown) and '"key": "space.no_volume"' in banner.value   # resolved in the browser


@pytest.fixture(scope="module")
def space_app(tmp_path_factory):
    """The app as a Space without a volume runs it."""
    from studio.app import launch_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPACE_ID", "someone/alignment-studio")
        patch.setattr(space, "MOUNTINFO", mountinfo(tmp_path_factory.mktemp("mounts")))   # whatever this machine has
        workspace = tmp_path_factory.mktemp("space-workspace")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        blocks = launch_app(workspace, port=port, prevent_thread_lock=True)
        yield blocks
        blocks.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("locale, language", [("en-US", "en"), ("ko-KR", "ko")])
def test_a_space_without_a_volume_says_so_on_every_page(space_app, locale, language, tmp_path):
    from playwright.sync_api import sync_playwright

    from pipelines.messages import catalog
    from tests.test_browser import ARGS

    sentence = catalog(language)["space.no_volume"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, locale=locale)
        page.goto(space_app.local_url)
        banner = page.locator("#storage-banner")
        banner.get_by_text(sentence).wait_for(timeout=30000)
        banner.screenshot(path=str(tmp_path / f"banner-{language}.png"))
        page.get_by_role("tab", name=catalog(language)["tab.chat"]).click()
        assert banner.get_by_text(sentence).is_visible(), "above the tabs: the Chat tab shows it too"
        browser.close()


def test_memory_is_the_containers_limit_where_it_is_below_the_machines(tmp_path):
    import psutil
    machine = psutil.virtual_memory().total
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{16 * 2**30}\n")
    (v2 / "memory.current").write_text(f"{10 * 2**30}\n")
    total, available = space.memory(v2)
    assert total == min(16 * 2**30, machine)
    assert available <= 6 * 2**30 or total == machine
    (v2 / "memory.max").write_text("max\n")
    assert space.memory(v2)[0] == machine, "no limit: the machine's"
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**29}\n")
    assert space.memory(v1.parent) == (2**30, min(2**29, psutil.virtual_memory().available))
    assert space.memory(tmp_path / "none")[0] == machine

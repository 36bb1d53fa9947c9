"""Push to the Hub (pipelines/hub_push.py): every file of an export in one commit, private by default, refused in one
sentence (and before any call to the Hub) when the path, the repo id or the token is wrong, and the token nowhere on
disk afterwards. The Hub is faked: HfApi's methods are replaced, in this process and, through a sitecustomize, in the
job's own process."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from pipelines import api, hub_push, jobs
from pipelines.errors import StudioError

TOKEN = "hf_ThisIsTheSecretTokenOfTheTest1234"


@pytest.fixture
def model_export(workspace: Path) -> str:
    """A finished model export as pipelines/export.py leaves it: files, one in a subfolder, and its card."""
    folder = workspace / "exports" / "my-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# my-model\n", encoding="utf-8")
    (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"\x00" * 4096)
    (folder / "sub" / "tokenizer.json").write_text("{}", encoding="utf-8")
    return "exports/my-model"


def _http_error(status: int) -> HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("POST", "https://huggingface.co/api/x"))
    return HfHubHTTPError(f"{status} Client Error", response=response)


class FakeHub:
    """HfApi's methods the push uses, recording every call (the token they were made with included)."""

    def __init__(self, existing: str | None = None, user: str = "alice", role: str = "write",
                 fails: dict | None = None):
        self.existing, self.user, self.role, self.fails = existing, user, role, fails or {}
        self.calls: list[tuple[str, dict]] = []

    def install(self, monkeypatch) -> "FakeHub":
        for name in ("whoami", "repo_info", "create_repo", "preupload_lfs_files", "create_commit"):
            monkeypatch.setattr(HfApi, name, self._method(name))
        return self

    def _method(self, name: str):
        def method(api_self, *args, **kwargs):
            self.calls.append((name, {"args": args, **kwargs, "api_token": api_self.token}))
            if name in self.fails:
                raise self.fails[name]
            return getattr(self, f"_{name}")(*args, **kwargs)
        return method

    def _whoami(self, token=None):
        return {"name": self.user, "orgs": [{"name": "my-org"}], "auth": {"accessToken": {"role": self.role}}}

    def _repo_info(self, repo_id, repo_type=None):
        if self.existing is None:
            raise RepositoryNotFoundError("404", response=httpx2.Response(404, request=httpx2.Request("GET", "https://x")))
        return type("Info", (), {"private": self.existing == "private"})()

    def _create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        prefix = "datasets/" if repo_type == "dataset" else ""
        return f"https://huggingface.co/{prefix}{repo_id}"

    def _preupload_lfs_files(self, repo_id, additions, repo_type=None):
        return None

    def _create_commit(self, repo_id, operations, repo_type=None, commit_message=""):
        return None

    def named(self, name: str) -> list[dict]:
        return [call for called, call in self.calls if called == name]


class Progress:
    def __init__(self):
        self.count, self.done = None, []

    def total(self, count):
        self.count = count

    def rows(self, rows):
        self.done += rows


@pytest.fixture
def online(monkeypatch):
    """The Hub reachable (conftest turns it off for every test): only faked methods are ever called."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("ALIGNMENT_STUDIO_HOSTED", raising=False)
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)   # no stored login of this machine's


def _push_in_process(workspace: Path, path: str, repo_id: str, private: bool = True, token: str = TOKEN):
    """What the job does, in this process: prepare, the secrets, then run with the token in the environment only."""
    spec, _ = hub_push.prepare_push(workspace, {"path": path, "repo_id": repo_id, "private": private})
    env = hub_push.job_secrets(workspace, spec, {"HF_TOKEN": token})
    progress = Progress()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", env["HF_TOKEN"])
        summary = hub_push.run_push(workspace, spec, progress)
    return spec, summary, progress


def test_a_push_uploads_every_file_then_commits_them_all_at_once_privately(workspace, model_export, online, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    spec, summary, progress = _push_in_process(workspace, model_export, "alice/my-model")
    files = sorted(p.relative_to(workspace / model_export).as_posix() for p in (workspace / model_export).rglob("*")
                   if p.is_file())
    assert files == ["README.md", "config.json", "model.safetensors", "sub/tokenizer.json"]
    [commit] = hub.named("create_commit")   # one commit: the repo never holds half an export
    assert sorted(op.path_in_repo for op in commit["args"][1]) == files
    assert [len(call["additions"]) for call in hub.named("preupload_lfs_files")] == [1, 1, 1, 1]   # a file at a time
    [created] = hub.named("create_repo")
    assert created["private"] is True and created["exist_ok"] is True and created["repo_type"] == "model"
    assert all((call.get("token") if name == "whoami" else call["api_token"]) == TOKEN for name, call in hub.calls)
    assert [name for name, _ in hub.calls] == ["whoami", "repo_info", "create_repo", *["preupload_lfs_files"] * 4,
                                               "create_commit"]
    assert progress.count == 4 and [row["file"] for row in progress.done] == files
    assert summary == {"url": "https://huggingface.co/alice/my-model", "repo_id": "alice/my-model", "repo_type": "model",
                       "files": files, "bytes": sum((workspace / model_export / f).stat().st_size for f in files),
                       "private": True}


def test_a_dataset_export_goes_to_a_dataset_repo_and_public_when_asked(workspace, online, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    file = api.export_dataset(workspace, "preference-en-sample", "parquet")
    _, summary, _ = _push_in_process(workspace, "exports/datasets/preference-en-sample", "my-org/prefs", private=False)
    [created] = hub.named("create_repo")
    assert created["repo_type"] == "dataset" and created["private"] is False
    assert summary["url"] == "https://huggingface.co/datasets/my-org/prefs" and summary["private"] is False
    assert sorted(summary["files"]) == ["README.md", Path(file).name]


@pytest.mark.parametrize("path", ["../outside", "/etc", "runs/some-run", "exports", "exports/datasets", "datasets/x",
                                  "exports/.my-model.partial", "exports/missing", "exports/datasets/missing",
                                  "exports/my-model/sub"])
def test_a_path_that_is_not_a_finished_export_is_refused_before_any_call(workspace, model_export, online, monkeypatch, path):
    (workspace / "exports" / ".my-model.partial").mkdir()   # an export being written: not finished
    (workspace / "exports" / ".my-model.partial" / "README.md").write_text("#", encoding="utf-8")
    (workspace / "runs" / "some-run").mkdir(parents=True)
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, path, "alice/x", True, TOKEN)
    assert refused.value.code in ("hub_push.not_an_export", "hub_push.no_export", "paths.outside", "paths.not_relative")
    assert hub.calls == [] and not list(jobs.jobs_root(workspace).iterdir())


@pytest.mark.parametrize("repo_id", ["alice", "alice/", "/x", "a/b/c", "alice/my model", "alice/..x", "alice/x--y",
                                     "-alice/x", "alice/x.", 42, None])
def test_a_bad_repo_id_is_one_sentence_and_no_call(workspace, model_export, online, monkeypatch, repo_id):
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, model_export, repo_id, True, TOKEN)
    assert refused.value.code == "hub_push.bad_repo_id" and hub.calls == []


def test_private_must_be_a_boolean_and_a_token_never_goes_in_a_spec(workspace, model_export, online, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError, match="true or false"):
        api.push_to_hub(workspace, model_export, "alice/x", "no", TOKEN)
    with pytest.raises(StudioError) as refused:   # start_job would write its spec into job.json
        api.start_job(workspace, "push_to_hub", {"path": model_export, "repo_id": "alice/x", "token": TOKEN})
    assert refused.value.code == "hub_push.token_in_spec" and TOKEN not in str(refused.value)
    assert hub.calls == [] and not list(jobs.jobs_root(workspace).iterdir())


def test_without_a_token_the_push_is_one_sentence_saying_where_to_get_one_and_makes_no_call(workspace, model_export,
                                                                                              online, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, model_export, "alice/x")
    assert refused.value.code == "hub_push.no_token"
    assert "huggingface.co/settings/tokens" in str(refused.value) and "write" in str(refused.value)
    assert hub.calls == [] and not list(jobs.jobs_root(workspace).iterdir())


def test_hosted_the_servers_own_token_is_never_used_only_the_visitors(workspace, model_export, online, monkeypatch):
    import huggingface_hub
    monkeypatch.setenv("HF_TOKEN", "hf_TheSpaceOwnersToken")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_TheSpaceOwnersToken")
    monkeypatch.setenv("ALIGNMENT_STUDIO_HOSTED", "{}")
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, model_export, "alice/x")
    assert refused.value.code == "hub_push.no_token_hosted" and hub.calls == []
    assert hub_push.resolve_token(f"  {TOKEN}\n") == TOKEN   # a visitor's own, pasted with a newline
    monkeypatch.delenv("ALIGNMENT_STUDIO_HOSTED")
    assert hub_push.resolve_token("") == "hf_TheSpaceOwnersToken"   # one's own machine: one's own login


@pytest.mark.parametrize("hub, code", [
    (FakeHub(fails={"whoami": _http_error(401)}), "hub_push.bad_token"),
    (FakeHub(fails={"whoami": httpx2.ConnectError("no route")}), "hub_push.unreachable"),
    (FakeHub(role="read"), "hub_push.read_only"),
    (FakeHub(user="bob"), "hub_push.not_yours"),   # alice/x is someone else's name
])
def test_a_token_the_hub_refuses_fails_before_the_job_starts(workspace, model_export, online, monkeypatch, hub, code):
    hub.install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, model_export, "alice/x", True, TOKEN)
    assert refused.value.code == code and TOKEN not in str(refused.value)
    assert [name for name, _ in hub.calls] == ["whoami"] and not list(jobs.jobs_root(workspace).iterdir())
    if code == "hub_push.not_yours":
        assert "bob/x" in str(refused.value)


def test_offline_the_push_is_one_sentence_and_no_call(workspace, model_export, online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        api.push_to_hub(workspace, model_export, "alice/x", True, TOKEN)
    assert refused.value.code == "hub_push.offline" and hub.calls == []


@pytest.mark.parametrize("hub, code", [
    (FakeHub(existing="public"), "hub_push.exists_public"),
    (FakeHub(fails={"create_commit": _http_error(403)}), "hub_push.forbidden"),
    (FakeHub(fails={"preupload_lfs_files": httpx2.ReadTimeout("slow")}), "hub_push.unreachable"),
    (FakeHub(fails={"create_repo": _http_error(409)}), "hub_push.refused"),
])
def test_a_push_the_hub_refuses_midway_commits_nothing(workspace, model_export, online, monkeypatch, hub, code):
    hub.install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        _push_in_process(workspace, model_export, "alice/my-model")
    assert refused.value.code == code
    assert hub.named("create_commit") == [] or code == "hub_push.forbidden"   # the one commit either whole or none
    if code == "hub_push.exists_public":   # a private push never lands in a public repo
        assert hub.named("create_repo") == hub.named("preupload_lfs_files") == []


def test_an_existing_private_repo_takes_the_push_and_a_public_push_keeps_it_private(workspace, model_export, online,
                                                                                     monkeypatch):
    FakeHub(existing="private").install(monkeypatch)
    _, summary, _ = _push_in_process(workspace, model_export, "alice/my-model", private=False)
    assert summary["private"] is True   # what the repo is, not what was asked


FAKE_HUB = '''
import json, os
if os.environ.get("FAKE_HUB_LOG"):
    from huggingface_hub import HfApi

    def _record(name, result=None):
        def method(self, *args, **kwargs):
            with open(os.environ["FAKE_HUB_LOG"], "a") as log:
                log.write(json.dumps({"call": name, "token_matches": self.token == os.environ.get("HF_TOKEN"),
                                      "files": [op.path_in_repo for op in args[1]] if name == "create_commit" else None,
                                      "private": kwargs.get("private")}) + "\\n")
            if name == "repo_info":
                from huggingface_hub.errors import RepositoryNotFoundError
                import httpx2
                raise RepositoryNotFoundError("404", response=httpx2.Response(404, request=httpx2.Request("GET", "https://x")))
            return result
        return method

    HfApi.repo_info = _record("repo_info")
    HfApi.create_repo = _record("create_repo", "https://huggingface.co/alice/my-model")
    HfApi.preupload_lfs_files = _record("preupload_lfs_files")
    HfApi.create_commit = _record("create_commit")
'''


def test_through_a_real_job_process_the_token_is_nowhere_on_disk(workspace, model_export, online, monkeypatch, tmp_path):
    """The token reaches the job's process through its environment: not job.json, status, results, the log, nor
    anything else under the workspace."""
    fake = tmp_path / "fake-hub"   # outside the workspace: the child process's stand-in for the Hub
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(textwrap.dedent(FAKE_HUB), encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(fake))
    monkeypatch.setenv("FAKE_HUB_LOG", str(tmp_path / "hub-calls.jsonl"))
    FakeHub().install(monkeypatch)   # the server's whoami
    summary = api.push_to_hub(workspace, model_export, "alice/my-model", True, TOKEN)
    assert summary["url"] == "https://huggingface.co/alice/my-model" and summary["private"] is True
    calls = [json.loads(line) for line in (tmp_path / "hub-calls.jsonl").read_text().splitlines()]
    assert [c["call"] for c in calls] == ["repo_info", "create_repo", *["preupload_lfs_files"] * 4, "create_commit"]
    assert all(c["token_matches"] for c in calls)   # the child pushed with the token from its environment
    assert sorted(calls[-1]["files"]) == sorted(summary["files"]) and calls[1]["private"] is True
    [job_dir] = jobs.list_job_dirs(workspace)
    assert json.loads((job_dir / "job.json").read_text())["spec"] == {
        "path": "exports/my-model", "repo_id": "alice/my-model", "repo_type": "model", "private": True}
    written = [p for p in workspace.rglob("*") if p.is_file()]
    assert job_dir / "job.log" in written and job_dir / "status.json" in written
    assert [p for p in written if TOKEN.encode() in p.read_bytes()] == []
    assert "HF_TOKEN" not in __import__("os").environ   # the server's own environment never held it


def test_spawn_gives_the_child_its_environment_and_leaves_the_servers_alone(tmp_path, monkeypatch):
    import subprocess

    from pipelines import runs

    seen = {}

    class Popen:
        pid = 0

        def __init__(self, command, **kwargs):
            seen.update(kwargs["env"])

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Popen)
    runs.spawn(["job", str(tmp_path)], tmp_path / "job.log", env={"HF_TOKEN": TOKEN})
    assert seen["HF_TOKEN"] == TOKEN and sys.executable
    assert "HF_TOKEN" not in __import__("os").environ


def test_the_data_tab_downloads_a_copy_and_pushes_only_with_a_token(workspace, online, monkeypatch):
    from studio import hub_form
    from studio.tabs import data

    update = data.download(workspace, "preference-en-sample", "parquet")
    copy = Path(update["value"])
    assert update["visible"] and copy.name == "preference-en-sample.parquet" and workspace not in copy.parents
    assert copy.read_bytes() == (workspace / "exports/datasets/preference-en-sample" / copy.name).read_bytes()
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(StudioError) as refused:
        data.start_push(workspace, "preference-en-sample", "alice/prefs", "jsonl", True, "")
    assert refused.value.code == "hub_push.no_token" and hub.calls == []
    said = hub_form.pushed_text({"files": ["README.md", "x.jsonl"], "bytes": 2_500_000, "private": True,
                             "url": "https://huggingface.co/datasets/alice/prefs"})
    assert "2 files" in said and "https://huggingface.co/datasets/alice/prefs" in said and "private" in said

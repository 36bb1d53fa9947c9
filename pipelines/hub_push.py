"""Push an export to the Hugging Face Hub: a model export (`exports/<name>`, pipelines/export.py) as a model repo, a
dataset export (`exports/datasets/<name>`, pipelines/data/export.py) as a dataset repo; new or existing, private
unless asked otherwise.

A push is a job (pipelines/jobs.py, kind "push_to_hub"): its own process, progress counted in files, Cancel.
All or nothing: every file is uploaded first (preupload_lfs_files, one file at a time, so progress moves), then ONE
commit adds them all, so a repo never holds half an export; a push stopped before that commit leaves its files out.

The token is never written down. The server finds it (the visitor's typed token; else, on one's own machine, HF_TOKEN
or `hf auth login`; on a shared server only the visitor's own) and checks it with the Hub before the job starts; the
job's process gets it in its environment alone (jobs.start's `secrets` → runs.spawn's `env`), never in job.json,
status.json, results, the log or the folder pushed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipelines.errors import StudioError, quote, shorten
from pipelines.messages import Message

TOKEN_ENV = "HF_TOKEN"      # the variable the job's process reads its token from
HUB_TIMEOUT_S = 10          # the server's check of the token: a dead network costs seconds and one sentence
COLUMNS = ("file", "bytes")
FIELDS = ("path", "repo_id", "private")
# owner/name as the Hub allows them: letters, digits, - _ . ; neither part starts with - or . , and no "--" or "..".
REPO_ID = re.compile(r"(?!.*(?:--|\.\.))[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
TOKEN_TEXT = re.compile(r"[\x21-\x7e]{1,512}")   # one word of printable ASCII: what a pasted token can be


# ---- the server's side: what was asked, and the token, checked before anything is written

def prepare_push(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: path (an export folder, relative to the workspace), repo_id (owner/name), private (default true)."""
    if "token" in spec:
        raise StudioError("hub_push.token_in_spec")   # job.json would keep it: a token goes as a secret only
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise StudioError("hub_push.unknown_field", field=quote(unknown[0]), fields=", ".join(FIELDS))
    folder, repo_type = export_folder(workspace, spec.get("path"))
    repo_id = spec.get("repo_id").strip() if isinstance(spec.get("repo_id"), str) else spec.get("repo_id")
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or repo_id.endswith((".", "-")):
        raise StudioError("hub_push.bad_repo_id", repo=quote(repo_id))
    private = spec.get("private", True)
    if not isinstance(private, bool):
        raise StudioError("hub_push.private_not_bool", value=quote(private))
    if not files_of(folder):
        raise StudioError("hub_push.empty_export", path=quote(spec["path"]))
    return {"path": folder.relative_to(Path(workspace).resolve()).as_posix(), "repo_id": repo_id,
            "repo_type": repo_type, "private": private}, []


def export_folder(workspace: Path, path) -> tuple[Path, str]:
    """The finished export at `path` and the kind of repo it goes to: a folder right under exports/ (a model) or
    under exports/datasets/ (a dataset), not a staging folder, holding its card."""
    from pipelines.data.export import datasets_exports_root
    from pipelines.export import exports_root
    from pipelines.paths import inside

    folder = inside(Path(workspace), path, "export path") if isinstance(path, str) else None
    models, datasets = exports_root(workspace).resolve(), datasets_exports_root(workspace).resolve()
    if folder is None or folder.parent not in (models, datasets) or folder == datasets:
        raise StudioError("hub_push.not_an_export", path=quote(path))
    if folder.name.startswith(".") or not (folder / "README.md").is_file():   # staging, or not finished
        raise StudioError("hub_push.no_export", path=quote(path))
    return folder, "dataset" if folder.parent == datasets else "model"


def files_of(folder: Path) -> list[Path]:
    """Every file of an export, in a stable order; links are never followed out of it (the studio writes none)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def job_secrets(workspace: Path, spec: dict, offered: dict) -> dict[str, str]:
    """The environment of the push's process: the token, found (resolve_token) and checked with the Hub."""
    token = resolve_token(offered.get(TOKEN_ENV, ""))
    if hub_offline():
        raise StudioError("hub_push.offline")
    check_token(token, spec["repo_id"])
    return {TOKEN_ENV: token}


def resolve_token(typed: str | None) -> str:
    """The token to push with: the one typed; else, on one's own machine, HF_TOKEN or the stored `hf auth login`.
    On a shared server (hosted mode) only the visitor's own: a Space's HF_TOKEN belongs to its owner."""
    from pipelines import hosting

    token = typed.strip() if isinstance(typed, str) else ""
    if not token and hosting.current() is None:
        import huggingface_hub
        token = (huggingface_hub.get_token() or "").strip()
    if not token:
        raise StudioError("hub_push.no_token_hosted" if hosting.current() is not None else "hub_push.no_token")
    if not TOKEN_TEXT.fullmatch(token):
        raise StudioError("hub_push.bad_token_text")   # never echoed: it may be most of a real token
    return token


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_token(token: str, repo_id: str) -> None:
    """Ask the Hub who the token is (within HUB_TIMEOUT_S): refused in one sentence if it is wrong, can only read,
    or is not allowed into the repo's namespace (a name taken by someone else)."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import HfApi

    pool = ThreadPoolExecutor(max_workers=1)   # whoami takes no timeout; a thread bounds the wait
    asked = pool.submit(HfApi().whoami, token=token)
    pool.shutdown(wait=False)
    try:
        me = asked.result(timeout=HUB_TIMEOUT_S)
    except TimeoutError:
        raise StudioError("hub_push.timed_out", seconds=HUB_TIMEOUT_S) from None
    except Exception as exc:   # noqa: BLE001 — every failure is one of hub_error's sentences
        raise hub_error(exc, repo_id) from None
    if (me.get("auth", {}).get("accessToken") or {}).get("role") == "read":
        raise StudioError("hub_push.read_only")
    user = me.get("name") or "?"
    namespaces = [user, *(org.get("name") for org in me.get("orgs") or [] if org.get("name"))]
    owner, name = repo_id.split("/")
    if owner not in namespaces:
        raise StudioError("hub_push.not_yours", repo=quote(repo_id), owner=owner, user=user,
                          namespaces=", ".join(namespaces), suggestion=f"{user}/{name}")


def hub_error(exc: BaseException, repo_id: str) -> StudioError:
    """What the Hub's (or the network's) refusal means for the user, in one sentence."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return StudioError("hub_push.offline")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return StudioError("hub_push.bad_token")
        if status == 403:
            return StudioError("hub_push.forbidden", repo=quote(repo_id))
        return StudioError("hub_push.refused", repo=quote(repo_id), status=status or "?", problem=shorten(str(exc)))
    return StudioError("hub_push.unreachable", error=type(exc).__name__)


# ---- the job's side: the process that uploads

def run_push(workspace: Path, spec: dict, progress) -> dict:
    """Upload every file of the export, then commit them all at once; the token is in this process's environment."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise StudioError("hub_push.no_token")
    repo_id, repo_type, private = spec["repo_id"], spec["repo_type"], spec["private"]
    folder = Path(workspace) / spec["path"]
    files = files_of(folder)
    progress.total(len(files))
    api = HfApi(token=token)
    try:
        existing = _visibility(api, repo_id, repo_type)
        if private and existing == "public":   # asked for private: never put the files where everyone sees them
            raise StudioError("hub_push.exists_public", repo=quote(repo_id))
        url = str(api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
        operations = []
        for path in files:
            name = path.relative_to(folder).as_posix()
            operation = CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
            api.preupload_lfs_files(repo_id, additions=[operation], repo_type=repo_type)
            operations.append(operation)
            progress.rows([{"file": name, "bytes": path.stat().st_size}])
        api.create_commit(repo_id, operations, repo_type=repo_type,
                          commit_message=f"Upload {folder.name} from Alignment Studio")
    except StudioError:
        raise
    except Exception as exc:   # noqa: BLE001 — the Hub's refusals and a dead network, each one sentence
        if _local(exc):
            raise   # a file of the export gone while it was read: a fault to log (jobs.crashed), not the network's
        raise hub_error(exc, repo_id) from None
    return {"url": url, "repo_id": repo_id, "repo_type": repo_type, "files": [p.relative_to(folder).as_posix() for p in files],
            "bytes": sum(p.stat().st_size for p in files), "private": private if existing is None else existing == "private"}


def _visibility(api, repo_id: str, repo_type: str) -> str | None:
    """"private" or "public" for a repo that exists, None for one the push will create."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return None
    return "private" if getattr(info, "private", False) else "public"


def _local(exc: Exception) -> bool:
    """An error of this machine's files, not of the Hub or the network (both of which are OSErrors too)."""
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, OSError) and not isinstance(exc, (HfHubHTTPError, ConnectionError, TimeoutError))

"""Whose workspace is whose, on a server shared by several people (hosted mode).

Served to one person (the default), the studio has one workspace. Served to many, the workspace given at start is
the server's root, and each user works in `<root>/users/<id>/`, a complete workspace of their own (runs, datasets,
jobs, votes, reward files): every API call and every tab acts in the caller's one. Who a caller is comes from the
deployment (studio/identity.py); here a user is only an id that is safe as a folder name.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

USERS_DIR = "users"
LAST_SEEN_FILE = ".last_seen"     # touched as a sandbox is used; its age decides when the sandbox expires
SANDBOX_PREFIX = "sandbox-"
SANDBOX_LIFETIME_S = 24 * 3600
_ID_CHARACTERS = re.compile(r"[^a-z0-9._-]+")


def user_id(kind: str, name: str) -> str:
    """A folder-safe, stable id for a user known to the deployment by `name` ("hf", "alice"): readable where the
    name is, and told apart from a different name that would read the same ("Al ice" and "al-ice")."""
    readable = _ID_CHARACTERS.sub("-", name.lower()).strip("-.")[:40] or "user"
    if readable == name:
        return f"{kind}-{readable}"
    return f"{kind}-{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def display_name(user: str) -> str:
    """A user id as people read it: the login name ("alice", "alice (Hugging Face)"), or "guest 1a2b3c" for a
    sandbox. A name that needed a hash to stay apart keeps it."""
    kind, _, rest = user.partition("-")
    if kind + "-" == SANDBOX_PREFIX:
        return f"guest {rest[:6]}"
    return f"{rest} (Hugging Face)" if kind == "hf" else rest or user


def sandbox_id(token: str) -> str:
    """The id of an anonymous visitor's sandbox: a hash of their secret token, so that the folder's name, which an
    admin sees, does not let anyone take the sandbox over."""
    return SANDBOX_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:24]


def user_workspace(root: Path, user: str) -> Path:
    """`<root>/users/<user>`, created if it is new."""
    path = Path(root) / USERS_DIR / user
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_root(workspace: Path) -> Path:
    """The server's root workspace of a user's workspace; a workspace that is no user's is its own root."""
    workspace = Path(workspace)
    return workspace.parent.parent if workspace.parent.name == USERS_DIR else workspace


def user_of(workspace: Path) -> str | None:
    workspace = Path(workspace)
    return workspace.name if workspace.parent.name == USERS_DIR else None


def may_read(path: Path, workspace: Path) -> bool:
    """Whether a user acting in `workspace` may read the folder or file `path` they named: nothing of the server's
    root but their own workspace (another user's runs, the server's log), and anything else the process may read
    (a base model's folder). Told apart from a missing folder by nobody: the caller says "no such model"."""
    if user_of(workspace) is None:
        return True   # the one user, or an admin's view of the root: everything is theirs
    resolved, root = Path(path).resolve(), server_root(Path(workspace)).resolve()
    return not resolved.is_relative_to(root) or resolved.is_relative_to(Path(workspace).resolve())


def all_workspaces(root: Path) -> list[Path]:
    """The root itself, then every user's workspace, by id."""
    users = Path(root) / USERS_DIR
    return [Path(root)] + (sorted(p for p in users.iterdir() if p.is_dir()) if users.is_dir() else [])


def users(root: Path) -> list[str]:
    return [user_of(w) for w in all_workspaces(root)[1:]]


def touch(workspace: Path, every_s: float = 60.0) -> None:
    """Note that a sandbox is in use (at most once a minute: this runs on every request)."""
    marker = Path(workspace) / LAST_SEEN_FILE
    try:
        if time.time() - marker.stat().st_mtime < every_s:
            return
    except FileNotFoundError:
        pass
    try:
        marker.touch()
    except OSError:
        pass


def expire_sandboxes(root: Path, lifetime_s: float = SANDBOX_LIFETIME_S) -> list[str]:
    """Delete the sandboxes nobody used for `lifetime_s`, unless a run of theirs is still training; return their ids.
    Only sandboxes: a logged-in user's workspace is theirs to keep."""
    from pipelines import run_files, runs

    gone = []
    for workspace in all_workspaces(root)[1:]:
        if not workspace.name.startswith(SANDBOX_PREFIX):
            continue
        marker = workspace / LAST_SEEN_FILE
        last = marker.stat().st_mtime if marker.exists() else workspace.stat().st_mtime
        if time.time() - last < lifetime_s:
            continue
        if any(runs.refresh_status(d).get("status") in run_files.ACTIVE_STATES for d in runs.list_run_dirs(workspace)):
            continue
        shutil.rmtree(workspace, ignore_errors=True)
        gone.append(workspace.name)
    return gone


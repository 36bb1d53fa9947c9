"""Where things live: the repository's assets, the model cache, and safe paths inside a workspace."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.messages import Message, has_message

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# A name a user picks (run name, dataset name): letters, digits, - _ . ; no slashes, no "..". Matched with
# fullmatch: `$` would also accept a trailing newline, and "abc\n" would become a folder.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def cache_dir() -> Path:
    """The model cache (converted bundled model, downloaded wheels); override with ALIGNMENT_STUDIO_CACHE."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alignment-studio"
    return Path(os.environ.get("ALIGNMENT_STUDIO_CACHE", default))


def _named(what: str) -> Message | str:
    """What a name or path is for ("run id"), as the catalog words it (paths.what.run_id)."""
    code = "paths.what." + re.sub(r"[^a-z]+", "_", what.lower())
    return Message(code) if has_message(code) else what


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is safe to use as a single directory name, else raise StudioError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise StudioError("paths.bad_name", what=_named(what), name=quote(name))
    return name


def inside(root: Path, relative: str, what: str = "path") -> Path:
    """Resolve `relative` under `root`; refuse absolute paths and anything that escapes `root`."""
    if not isinstance(relative, str) or "\0" in relative:   # a NUL byte makes the file system raise, not answer
        raise StudioError("paths.not_a_path", what=_named(what), path=quote(relative))
    if not relative or os.path.isabs(relative) or relative.startswith("~"):
        raise StudioError("paths.not_relative", what=_named(what), path=quote(relative), root=str(root))
    resolved = (root / relative).resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise StudioError("paths.outside", what=_named(what), path=quote(relative), root=str(root))
    return resolved


def upload_folder() -> Path:
    """Where the Gradio app keeps the files visitors upload, found as gradio.utils.get_upload_folder finds it
    (pipelines never imports gradio; a test checks that the two agree)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def check_apart_from_uploads(workspace: Path) -> None:
    """Any visitor can upload a file; one that lands inside the workspace could then be named as a reward rule and
    run. So the workspace and the upload folder must not hold one another."""
    root, uploads = Path(workspace).resolve(), upload_folder()
    if uploads.is_relative_to(root) or root.is_relative_to(uploads):
        raise StudioError("paths.uploads_overlap", workspace=str(root), uploads=str(uploads))


@contextmanager
def file_lock(lock_path: Path, wait: bool = True):
    """An exclusive lock between threads and processes on one machine; yields False if `wait` is off and it is held."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

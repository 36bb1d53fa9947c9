"""Show a user's mistake as one sentence in the UI (and to API clients), never as a traceback.

Anything else that goes wrong in a handler is a fault of the studio, not of the visitor: the visitor gets one
sentence naming the server log and an incident id, and the traceback goes to that log for the operator.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
from pathlib import Path

import gradio as gr

from pipelines.errors import StudioError

SERVER_LOG = Path("logs") / "server.log"   # inside the workspace
_log = logging.getLogger("alignment_studio.server")


def log_errors_in(workspace: Path) -> None:
    """Write the tracebacks that shows_errors keeps from visitors to the workspace's SERVER_LOG."""
    path = (Path(workspace) / SERVER_LOG).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not any(getattr(handler, "baseFilename", None) == str(path) for handler in _log.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        _log.addHandler(handler)


def _action(fn) -> str:
    """What the visitor was doing: the endpoint's or handler's name (a partial's function's)."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "")
    return name if name.isidentifier() else "this action"   # a lambda is "<lambda>"


def _unexpected(fn, exc: Exception) -> gr.Error:
    incident = secrets.token_hex(4)
    _log.error("%s: %s failed", incident, _action(fn), exc_info=exc)
    return gr.Error(f"Something went wrong in {_action(fn)}; details are in the workspace's {SERVER_LOG} ({incident}).",
                    print_exception=False)


def shows_errors(fn):
    """Turn StudioError into gr.Error, and any other exception into one sentence pointing at the server log, for
    plain and generator handlers, keeping the signature for gr.api. gr.Error passes as it is; KeyboardInterrupt
    and SystemExit are not Exceptions and pass too."""
    if inspect.isgeneratorfunction(fn):   # a partial of one counts too
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except StudioError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            except Exception as exc:
                raise _unexpected(fn, exc) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except StudioError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            raise _unexpected(fn, exc) from None
    return plain

"""Show a user's mistake as one sentence in the visitor's language (in the UI and to API clients), never as a traceback.

Every handler and endpoint runs inside `speaking(language)`, the visitor's language: the one they picked in the
header (a cookie the page sets, LANGUAGE_COOKIE), else their browser's Accept-Language. Anything else that goes
wrong in a handler is a fault of the studio, not of the visitor: the visitor gets one sentence naming the server log
and an incident id, and the traceback goes to that log for the operator.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import typing
from pathlib import Path

import gradio as gr

from pipelines.errors import StudioError
from pipelines.messages import LANGUAGES, current_language, language_of, speaking, text
from studio.identity import acting_for, request_field

SERVER_LOG = Path("logs") / "server.log"   # inside the workspace
LANGUAGE_COOKIE = "studio_language"        # set by the header's language picker (studio/i18n.py)
REQUEST = "studio_request"                 # the parameter through which Gradio hands shows_errors the request
_log = logging.getLogger("alignment_studio.server")


def log_errors_in(workspace: Path) -> None:
    """Write the tracebacks that shows_errors keeps from visitors to the workspace's SERVER_LOG."""
    path = (Path(workspace) / SERVER_LOG).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not any(getattr(handler, "baseFilename", None) == str(path) for handler in _log.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        _log.addHandler(handler)


def visitor_language(request: gr.Request | None) -> str:
    """The language picked in the header, else the browser's; without a request (a direct call) the one spoken now."""
    if request is None:
        return current_language()
    chosen = request_field(request, "cookies", LANGUAGE_COOKIE)
    return chosen if chosen in LANGUAGES else language_of(request_field(request, "headers", "accept-language"))


def _action(fn) -> str:
    """What the visitor was doing: the endpoint's or handler's name (a partial's function's)."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "")
    return name if name.isidentifier() else "this action"   # a lambda is "<lambda>"


def _as_gr_error(fn, exc: Exception, language: str) -> gr.Error:
    with speaking(language):
        if isinstance(exc, StudioError):
            sentence = exc.text()
        else:
            incident = secrets.token_hex(4)
            _log.error("%s: %s failed", incident, _action(fn), exc_info=exc)
            sentence = text("studio.unexpected", action=_action(fn), log=str(SERVER_LOG), incident=incident)
        return gr.Error(sentence, title=text("studio.error_title"), print_exception=False)   # the toast's title too


def shows_errors(fn):
    """Run `fn` for the visitor (studio/identity.py: their workspace), in their language, and turn StudioError into gr.Error in that language, and any other
    exception into one sentence pointing at the server log, for plain and generator handlers. gr.Error passes as it
    is; KeyboardInterrupt and SystemExit are not Exceptions and pass too.

    The wrapper keeps fn's signature and type hints for gr.api, plus one gr.Request parameter that Gradio fills in
    (helpers.special_args) and leaves out of the API description (utils.get_function_params)."""
    if inspect.isgeneratorfunction(fn):   # a partial of one counts too
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            args, kwargs, request = _take_request(args, kwargs)
            language = visitor_language(request)
            steps = fn(*args, **kwargs)
            try:
                while True:   # Gradio may run each step on another thread: set the visitor around each one
                    with speaking(language), acting_for(request):
                        try:
                            value = next(steps)
                        except StopIteration:
                            return
                        except gr.Error:
                            raise
                        except Exception as exc:
                            raise _as_gr_error(fn, exc, language) from None
                    yield value
            finally:
                steps.close()
        return _with_request_parameter(generator, fn)

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        args, kwargs, request = _take_request(args, kwargs)
        language = visitor_language(request)
        with speaking(language), acting_for(request):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise _as_gr_error(fn, exc, language) from None
    return _with_request_parameter(plain, fn)


def _take_request(args: tuple, kwargs: dict) -> tuple[tuple, dict, gr.Request | None]:
    """The handler's own arguments, and the gr.Request Gradio put among them (Gradio
    inserts it at the parameter's place, or after the inputs when fewer inputs than parameters are sent)."""
    request = kwargs.pop(REQUEST, None)
    if request is None:
        request = next((arg for arg in args if isinstance(arg, gr.Request)), None)
    if request is not None:
        args = tuple(arg for arg in args if arg is not request)
    return args, kwargs, request


def _with_request_parameter(wrapper, fn):
    """Give `wrapper` fn's signature and resolved type hints, and a gr.Request parameter after fn's positional ones."""
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    at = next((i for i, p in enumerate(parameters) if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)),
              len(parameters))
    request = inspect.Parameter(REQUEST, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)
    wrapper.__signature__ = signature.replace(parameters=[*parameters[:at], request, *parameters[at:]])
    wrapper.__annotations__ = {**_type_hints(fn), REQUEST: gr.Request}   # a new dict: wraps shared fn's
    return wrapper


def _type_hints(fn) -> dict:
    """fn's annotations resolved to objects (a partial's function's), as gr.api reads them; {} where they cannot be."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:   # a hint naming what its module does not import: gr.api gets no types, as before
        return {}

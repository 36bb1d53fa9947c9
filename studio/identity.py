"""Who is asking, and so in which workspace a handler acts: the one small layer that knows how the deployment tells
visitors apart. Nothing else in the code knows which way it was.

- Served to one person (`python launch.py`, with or without one login): the one workspace, as it always was.
- Served to many (hosted mode, or a team server with several logins, see launch.py): each user works in
  `<root>/users/<id>/` (pipelines/users.py). The id comes from the login Gradio checked (`--auth-file`,
  `gr.Request.username`), else from a Hugging Face login on a Space (OAuth), else, where the operator allows anonymous
  visitors, from a sandbox cookie this module gives each browser (or the gradio_client session), which expires
  after a day of no use.
- An admin (`--admin NAME`) may act in any user's workspace: the header's picker sets ACTING_AS_COOKIE.

Every handler runs inside `acting_for(request)` (studio/errors.shows_errors sets it); `in_workspace(fn)` turns
`fn(workspace, ...)` into a handler of the rest that finds the workspace there (`for_visitor`, unwrapped, for
studio.form.on, which wraps it).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import secrets
from pathlib import Path

from pipelines import users
from pipelines.errors import StudioError

SANDBOX_COOKIE = "studio_sandbox"
ACTING_AS_COOKIE = "studio_acting_as"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """How this server tells its visitors apart (set once, at start)."""
    root: Path
    per_user: bool = False          # each user their own workspace
    sandboxes: bool = False         # anonymous visitors get a sandbox each (a public demo)
    admins: frozenset[str] = frozenset()   # login names that may act in any workspace


@dataclasses.dataclass(frozen=True)
class Visitor:
    workspace: Path             # where they act now
    home: Path                  # their own workspace (an admin may act in another user's)
    user: str | None = None     # the id of `workspace`'s user; None: the one local user
    admin: bool = True          # the local user owns everything; on a shared server only --admin users
    name: str = ""              # the login name, "" for the local user and for sandboxes


_deployment: Deployment | None = None
_request: contextvars.ContextVar = contextvars.ContextVar("studio_request", default=None)


def configure(deployment: Deployment) -> None:
    global _deployment
    _deployment = deployment


def deployment() -> Deployment:
    if _deployment is None:
        raise RuntimeError("studio.identity.configure was not called (studio.app.build_app does it)")
    return _deployment


@contextlib.contextmanager
def acting_for(request):
    """Handlers called in this block act for `request`'s visitor. None keeps the visitor already set: a handler
    called by another one acts for the same visitor (outside any handler, that is the local user)."""
    token = _request.set(request if request is not None else _request.get())
    try:
        yield
    finally:
        _request.reset(token)


def visitor(request=None) -> Visitor:
    """The visitor of `request` (by default the one being served now)."""
    request = request if request is not None else _request.get()
    setup = deployment()
    if not setup.per_user:
        return Visitor(setup.root, setup.root)
    name, kind = login_name(request)
    if name:
        admin = name in setup.admins
        workspace = home = users.user_workspace(setup.root, users.user_id(kind, name))
        acting_as = request_field(request, "cookies", ACTING_AS_COOKIE) if admin else None
        if acting_as and acting_as in users.users(setup.root):
            workspace = setup.root / users.USERS_DIR / acting_as
        return Visitor(workspace, home, users.user_of(workspace), admin, name)
    if not setup.sandboxes:
        raise StudioError("identity.login_needed")
    token = request_field(request, "cookies", SANDBOX_COOKIE)
    session = getattr(request, "session_hash", None)
    if not token and not session:
        raise StudioError("identity.no_session")
    sandbox = users.sandbox_id(token or f"session:{session}")
    if not (setup.root / users.USERS_DIR / sandbox).exists():   # a new visitor: the time to sweep out old ones
        users.expire_sandboxes(setup.root)
    workspace = users.user_workspace(setup.root, sandbox)
    users.touch(workspace)
    return Visitor(workspace, workspace, workspace.name, admin=False)


def current_workspace() -> Path:
    return visitor().workspace


def login_name(request) -> tuple[str | None, str]:
    """The visitor's login name and how it was known: a login Gradio checked ("user"), or a Hugging Face login
    ("hf"); (None, "") for a visitor who did not log in."""
    if request is None:
        return None, ""
    if isinstance(getattr(request, "username", None), str) and request.username:
        return request.username, "user"
    profile = _oauth_profile(request)
    name = profile.get("preferred_username") if profile else None
    return (name, "hf") if isinstance(name, str) and name else (None, "")


def _oauth_profile(request) -> dict | None:
    """The Hugging Face profile of a visitor logged in through the Space's OAuth (Gradio keeps it in the session)."""
    try:
        from gradio.helpers import _session_from_request
        from gradio.oauth import _get_valid_oauth_info_from_session

        info = _get_valid_oauth_info_from_session(_session_from_request(request))
    except Exception:   # no session middleware (no OAuth here), or Gradio moved these: nobody logged in that way
        return None
    return info.get("userinfo") if isinstance(info, dict) else None


def request_field(request, part: str, name: str) -> str | None:
    """A cookie or header of the request, or None."""
    try:
        value = getattr(request, part).get(name)   # a starlette mapping, or Gradio's Obj once queued
    except AttributeError:
        return None
    return value if isinstance(value, str) else None


def for_visitor(fn, *bound, **bound_keywords):
    """`fn(workspace, *bound, ..., **bound_keywords)` as a function of the rest that acts in the visitor's workspace,
    for a handler that shows_errors wraps (studio.form.on does); `in_workspace` wraps it itself."""
    signature = inspect.signature(functools.partial(fn, None, *bound, **bound_keywords))
    if inspect.isgeneratorfunction(fn):
        def handler(*args, **kwargs):
            yield from fn(current_workspace(), *bound, *args, **bound_keywords, **kwargs)
    else:
        def handler(*args, **kwargs):
            return fn(current_workspace(), *bound, *args, **bound_keywords, **kwargs)
    functools.update_wrapper(handler, fn)
    del handler.__wrapped__   # Gradio and shows_errors must see the signature below, not fn's
    handler.__signature__ = signature
    handler.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items()
                               if k in signature.parameters or k == "return"}
    return handler


def in_workspace(fn, *bound, **bound_keywords):
    """A Gradio handler: `fn(workspace, *bound, ...)` in the visitor's workspace, their language, their errors shown
    as one sentence (studio.errors.shows_errors)."""
    from studio.errors import shows_errors

    return shows_errors(for_visitor(fn, *bound, **bound_keywords))


class SandboxCookie:
    """ASGI middleware: a browser that opens the page without a sandbox cookie gets one (a secret token; its
    sandbox is named after its hash), and every later page load renews its day."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        from studio.i18n import _is_page

        if scope["type"] != "http" or scope["method"] != "GET" or not _is_page(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cookies = _cookies(headers.get(b"cookie", b"").decode("latin-1"))
        token = cookies.get(SANDBOX_COOKIE) or secrets.token_urlsafe(24)
        # On a Space the page is framed by huggingface.co: a cookie of the framed site needs SameSite=None; Secure.
        secure = headers.get(b"x-forwarded-proto", b"").decode() == "https" or scope.get("scheme") == "https"
        attributes = "SameSite=None; Secure" if secure else "SameSite=Lax"
        cookie = f"{SANDBOX_COOKIE}={token}; Path=/; Max-Age={users.SANDBOX_LIFETIME_S}; HttpOnly; {attributes}"

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return {name: value for name, value in pairs}

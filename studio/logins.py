"""The logins of a team server: `--auth-file users.txt`, one `user:password` per line, or `user:<hash>` where the
hash is what `python launch.py --hash-password` prints (PBKDF2-SHA256, so the file need not hold a password).
Gradio asks `checker(logins)` at its login form; a logged-in user is then `gr.Request.username` (studio/identity.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

HASH_PREFIX = "pbkdf2_sha256$"
ITERATIONS = 600_000   # OWASP's figure for PBKDF2-SHA256 (2023)


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{HASH_PREFIX}{iterations}${_b64(salt)}${_b64(digest)}"


def matches(secret: str, password: str) -> bool:
    """Whether `password` is the one `secret` (a password as written, or a hash of one) stands for."""
    if not secret.startswith(HASH_PREFIX):
        return hmac.compare_digest(secret.encode(), password.encode())
    try:
        iterations, salt, digest = secret[len(HASH_PREFIX):].split("$")
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    except ValueError:   # a damaged hash matches no password (parse_logins refuses it at start)
        return False
    return hmac.compare_digest(computed, _unb64(digest))


def parse_logins(text: str) -> dict[str, str]:
    """user → secret from an auth file's text; blank lines and lines starting with # are skipped. Raises ValueError
    with one sentence naming the first bad line."""
    logins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, _, secret = line.partition(":")
        user, secret = user.strip(), secret.strip()
        if not user or not secret:
            raise ValueError(f"line {number} must look like user:password")
        if secret.startswith(HASH_PREFIX) and not _well_formed(secret):
            raise ValueError(f"line {number}: the password hash is damaged; make it again with --hash-password")
        if user in logins:
            raise ValueError(f"line {number}: user {user!r} is listed twice")
        logins[user] = secret
    if not logins:
        raise ValueError("it lists no user:password line")
    return logins


def checker(logins: dict[str, str]):
    """Gradio's auth callable: (username, password) → whether they match a login."""
    def check(username: str, password: str) -> bool:
        secret = logins.get(username)
        return secret is not None and matches(secret, password)
    return check


def _well_formed(secret: str) -> bool:
    parts = secret[len(HASH_PREFIX):].split("$")
    return len(parts) == 3 and parts[0].isdigit()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

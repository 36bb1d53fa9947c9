"""Start Alignment Studio: python launch.py [--host 127.0.0.1] [--port 7860] [--workspace ./workspace]
[--auth-file users.txt] [--admin NAME] [--hosted ...] [--share] [--max-parallel-runs 1]. A login may also come from
the ALIGNMENT_STUDIO_AUTH environment variable, so the password does not show in `ps`. Several logins, or --hosted
(on by itself on a Hugging Face Space), give every user a workspace of their own (studio/identity.py)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Alignment Studio: align a language model from your browser.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    parser.add_argument("--workspace", default="workspace", help="Folder for runs and datasets (default ./workspace).")
    parser.add_argument("--auth", help="Require a login, as user:password (visible in `ps`: prefer --auth-file or "
                        "the ALIGNMENT_STUDIO_AUTH environment variable).")
    parser.add_argument("--auth-file", help="Require a login: a file with one user:password (or user:hash, from "
                        "--hash-password) per line. Several users each get a workspace of their own.")
    parser.add_argument("--admin", default="", help="Login names (comma-separated) that may act in every user's "
                        "workspace and free every cached model.")
    parser.add_argument("--hash-password", action="store_true",
                        help="Ask for a password and print the hash to write after user: in --auth-file; start nothing.")
    parser.add_argument("--share", action="store_true", help="Open a public Gradio share link (needs a login, or --hosted).")
    parser.add_argument("--max-parallel-runs", type=int, default=1,
                        help="How many runs train at once; the others wait in the queue (default 1: one GPU, or a CPU).")
    parser.add_argument("--skip-model-prepare", action="store_true",
                        help="Do not fetch/convert the bundled model at start (the first run that needs it will).")
    from pipelines import hosting
    hosting.add_arguments(parser)   # --hosted and its limits
    from pipelines.space import launch_defaults
    parser.set_defaults(**launch_defaults())   # on a Space: its address and port, the workspace on its volume
    args = parser.parse_args(argv)
    args.hosted_limits = hosting.from_args(args, parser)   # None: local, no limits
    if args.hash_password:
        return args
    from studio.logins import parse_logins
    args.logins = {}
    if args.auth_file:
        try:
            args.logins = parse_logins(Path(args.auth_file).read_text(encoding="utf-8"))
        except OSError as exc:
            parser.error(f"--auth-file {args.auth_file}: {exc.strerror}.")
        except ValueError as exc:
            parser.error(f"--auth-file {args.auth_file}: {exc}.")
    args.auth = args.auth or os.environ.get("ALIGNMENT_STUDIO_AUTH") or None
    if not 1 <= args.max_parallel_runs <= 64:
        parser.error("--max-parallel-runs must be from 1 to 64.")
    if args.auth and (":" not in args.auth or not all(args.auth.split(":", 1))):
        parser.error("--auth must look like user:password.")
    if args.auth:
        args.logins = {**args.logins, **dict([args.auth.split(":", 1)])}
    hosted = args.hosted_limits is not None
    # Who is who (studio/identity.py): several logins, or hosted mode, give each user a workspace of their own;
    # hosted without logins gives each anonymous visitor a sandbox (and a Hugging Face login on a Space).
    args.per_user = hosted or len(args.logins) > 1
    args.sandboxes = hosted and not args.logins
    args.admins = frozenset(name.strip() for name in args.admin.split(",") if name.strip())
    if args.share and not (args.logins or hosted):
        parser.error("--share makes the app public: it needs --auth user:password, or --hosted.")
    if not (args.logins or hosted) and args.host not in LOOPBACK:
        parser.error(f"--host {args.host} lets other machines in: it needs --auth user:password, or --hosted "
                     "(each visitor in a sandbox of their own).")
    from pipelines.errors import StudioError
    from pipelines.paths import check_apart_from_uploads
    try:   # before minutes of model preparation (build_app checks again, for any other way in)
        check_apart_from_uploads(Path(args.workspace))
    except StudioError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hash_password:
        import getpass

        from studio.logins import hash_password
        print(hash_password(getpass.getpass("Password: ")))
        return 0
    from pipelines.space import on_space, start_on_space
    if on_space():   # before torch and huggingface_hub load: threads to the Space's CPUs, caches onto its volume
        print(start_on_space(Path(args.workspace)), flush=True)
    # Library deprecation notices (PEFT and TRL calling renamed transformers APIs) would bury the app's own lines.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from pipelines.errors import StudioError
    if not args.skip_model_prepare:
        from pipelines.bundled import bundled_model_dir
        try:
            bundled_model_dir(progress=lambda message: print(message, flush=True))
        except StudioError as exc:
            print(f"warning: {exc} The app starts anyway; Hub and local models still work.", file=sys.stderr)
    from pipelines.run_queue import MAX_PARALLEL_ENV
    os.environ[MAX_PARALLEL_ENV] = str(args.max_parallel_runs)   # the training processes dispatch the queue too
    from pipelines.hosting import export
    export(args.hosted_limits)   # the training processes and jobs read the same limits
    from studio.app import launch_app
    launch_app(Path(args.workspace), host=args.host, port=args.port, logins=args.logins or None, share=args.share,
               per_user=args.per_user, sandboxes=args.sandboxes, admins=args.admins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

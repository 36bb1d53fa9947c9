"""Start Alignment Studio: python launch.py [--host 127.0.0.1] [--port 7860] [--workspace ./workspace] [--auth user:pass]
[--share] [--max-parallel-runs 1]. The login may also come from the ALIGNMENT_STUDIO_AUTH environment variable or
--auth-file, so the password does not show in `ps`."""

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
    parser.add_argument("--auth-file", help="Require a login: a file whose first line is user:password.")
    parser.add_argument("--share", action="store_true", help="Open a public Gradio share link (requires --auth).")
    parser.add_argument("--max-parallel-runs", type=int, default=1,
                        help="How many runs train at once; the others wait in the queue (default 1: one GPU, or a CPU).")
    parser.add_argument("--skip-model-prepare", action="store_true",
                        help="Do not fetch/convert the bundled model at start (the first run that needs it will).")
    args = parser.parse_args(argv)
    if args.auth_file:
        try:
            args.auth = (Path(args.auth_file).read_text(encoding="utf-8").splitlines() or [""])[0].strip()
        except OSError as exc:
            parser.error(f"--auth-file {args.auth_file}: {exc.strerror}.")
    args.auth = args.auth or os.environ.get("ALIGNMENT_STUDIO_AUTH") or None
    if not 1 <= args.max_parallel_runs <= 64:
        parser.error("--max-parallel-runs must be from 1 to 64.")
    if args.share and not args.auth:
        parser.error("--share makes the app public: it needs --auth user:password.")
    if not args.auth and args.host not in LOOPBACK:
        parser.error(f"--host {args.host} lets other machines in: it needs --auth user:password.")
    if args.auth and (":" not in args.auth or not all(args.auth.split(":", 1))):
        parser.error("--auth must look like user:password.")
    from pipelines.errors import StudioError
    from pipelines.paths import check_apart_from_uploads
    try:   # before minutes of model preparation (build_app checks again, for any other way in)
        check_apart_from_uploads(Path(args.workspace))
    except StudioError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    from studio.app import launch_app
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    launch_app(Path(args.workspace), host=args.host, port=args.port, auth=auth, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""User-written Python (a reward rule, a scorer) runs here, in a process of its own, never in the app's server: a file
that calls os._exit, loops forever or raises must cost one sentence, not every visitor's app.

The parent starts `python -m pipelines.rl.rule_worker <file>` and speaks JSON lines with it. The worker imports the
file and answers {"ready": true}; then it answers each request {"prompts": [...], "completions": [...]} with
{"scores": [...]}. A mistake in the user's code is {"error": "<one sentence>"}, and the process stays for the next
call; a crash, or no answer within the time limit, ends the process and is one sentence naming the file.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from pipelines.errors import StudioError
from pipelines.messages import Message, has_message

# A rule scores one batch of answers (a PPO update's, the answers to one prompt in Compare) with string checks, in
# well under a second; one that takes 30 s is stuck in a loop or waiting on something, and the run or visitor with it.
CALL_SECONDS = 30
# Importing the file may import numpy or read a word list: more time than a call, still not forever.
START_SECONDS = 60
QUOTED_OUTPUT = 80   # characters of the user's last printed line quoted in an error: often the reason, never a flood


class RuleWorker:
    """`reward(prompts, completions)` of one file, called in one process of its own for the object's life."""

    def __init__(self, path: Path):
        from pipelines.runs import REPO_ROOT

        self.name = Path(path).name
        self.output: collections.deque[str] = collections.deque(maxlen=20)   # what the user's code printed last
        # An argument list, no shell; the same working folder as a training process, so a rule behaves alike in both.
        self.process = subprocess.Popen([sys.executable, "-m", "pipelines.rl.rule_worker", str(Path(path).resolve())],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=REPO_ROOT, start_new_session=True)   # its own group: see _stop
        # Neither the reader nor the finalizer holds `self`, so an object nobody closed still stops its process
        # when it is collected or when the interpreter exits.
        self._reader = threading.Thread(target=_keep_output, args=(self.process.stderr, self.output), daemon=True)
        self._reader.start()
        self._stop = weakref.finalize(self, _stop, self.process)
        try:
            self._reply(START_SECONDS)
        except StudioError:
            self.close()
            raise

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        request = json.dumps({"prompts": list(prompts), "completions": list(completions)}) + "\n"
        try:
            self.process.stdin.write(request.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):   # it ended since the last call (ValueError: we closed it)
            raise self._ended() from None
        return check_scores(self._reply(CALL_SECONDS).get("scores"), len(completions), self.name)

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> RuleWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reply(self, seconds: float) -> dict:
        if not select.select([self.process.stdout], [], [], seconds)[0]:
            self.close()
            raise StudioError("rl.rule_timeout", rule=self.name, seconds=f"{seconds:g}", printed=self._last_output())
        try:
            reply = json.loads(self.process.stdout.readline())
        except ValueError:   # b"": the process is gone
            reply = None
        if not isinstance(reply, dict):
            raise self._ended()
        if "error" in reply:   # the worker's StudioError, with its code when it had one
            message = reply.get("error_message")
            raise StudioError(Message.from_dict(message) if has_message((message or {}).get("code")) else str(reply["error"]))
        return reply

    def _ended(self) -> StudioError:
        try:
            self.process.wait(timeout=5)   # its output closed as it exited: let it finish, for the true exit code
        except subprocess.TimeoutExpired:
            pass
        self.close()
        code = self.process.returncode
        how = Message("rl.exit_code", code=code) if code >= 0 else Message("rl.ended_by", signal=signal.Signals(-code).name)
        return StudioError("rl.rule_ended", rule=self.name, how=how, printed=self._last_output())

    def _last_output(self) -> Message | str:
        """What the rule printed last, as a phrase for a sentence ("" when it printed nothing)."""
        self._reader.join(timeout=1)   # the process is gone: its last lines are on their way
        last = next((line.strip() for line in reversed(self.output) if line.strip()), "")
        return Message("rl.printed_last", output=repr(last[:QUOTED_OUTPUT])) if last else ""


def _stop(process: subprocess.Popen) -> None:
    """Kill the worker's whole process group (processes the user's code started too) and reap it, so nothing
    lingers; a worker holds nothing worth a graceful end."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with contextlib.suppress(BrokenPipeError):   # a request it died reading may still sit in our buffer
        process.stdin.close()
    process.stdout.close()


def _keep_output(stream, output: collections.deque) -> None:
    """Pass the worker's stderr (where the user's print() goes) on to ours, as the log shows it today, keeping the
    last lines for an error; read always, so a chatty rule never blocks on a full pipe."""
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace")
            output.append(line)
            sys.stderr.write(line)


def check_scores(scores, expected: int, where: str) -> list[float]:
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise StudioError("rl.scores_not_list", rule=where, type=type(scores).__name__) from None
    if len(values) != expected:
        raise StudioError("rl.scores_count", rule=where, scores=len(values), expected=expected)
    if not all(math.isfinite(v) for v in values):
        raise StudioError("rl.scores_not_finite", rule=where)
    return values


# The worker's side.

def serve(path: Path) -> None:
    """Import the file, then answer requests until the parent closes our stdin."""
    replies, requests = os.fdopen(os.dup(1), "w"), os.fdopen(os.dup(0))   # the protocol keeps copies of both...
    os.dup2(2, 1)   # ...so the user's print(), or any write to fd 1, goes to stderr and cannot corrupt a reply,
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)   # and reading stdin cannot eat a request
    sys.stdout = sys.stderr
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()

    def answer(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        function = _import_reward(path)
    except StudioError as exc:
        return answer(_error_reply(exc))
    answer({"ready": True})
    for line in requests:
        request = json.loads(line)
        try:
            scores = function(request["prompts"], request["completions"])
            answer({"scores": check_scores(scores, len(request["completions"]), path.name)})
        except StudioError as exc:
            answer(_error_reply(exc))
        except BaseException as exc:  # the user's code: whatever it raises (SystemExit too) is theirs to see, in one line
            answer(_error_reply(StudioError("rl.rule_raised", rule=path.name, problem=_one_line(exc))))


def _error_reply(error: StudioError) -> dict:
    """A StudioError as one JSON line: its English sentence, and its code and parameters to be told in any language."""
    return {"error": str(error), "error_message": error.catalog_message.to_dict() if error.catalog_message else None}


def _import_reward(path: Path):
    name = f"studio_reward_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses, pickle and typing look a module up by name while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # the user's code, as above
        raise StudioError("rl.rule_import", rule=path.name, problem=_one_line(exc)) from None
    function = getattr(module, "reward", None)
    if not callable(function):
        raise StudioError("rl.no_reward_function", rule=path.name)
    return function


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _exit_with_parent(parent: int) -> None:
    """A parent that dies while the user's code hangs closes no pipe the worker reads: notice it, and end too."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))

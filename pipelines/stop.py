"""Stopping a run cleanly: SIGTERM, SIGINT, a stop file in the run directory, or (hosted mode) the end of its
training time, agreed by every rank.

Light on purpose: the training process installs this before its heavy imports, so a Stop pressed
while it is still starting up is not lost.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from pipelines import run_files


class StopSignal:
    """Set by SIGTERM/SIGINT, the stop file or the hosted time limit; read by the callback at each step."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.requested = False
        from pipelines.hosting import wall_deadline
        self.deadline = wall_deadline()   # hosted mode: when this process's training time is up
        self.reason = None                # why, when no user asked: a Message for the run's status

    def install(self) -> None:
        self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum, frame):
            if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = True
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def restore(self) -> None:
        """Give the signals back (matters when training ran inside a longer-lived process, such as a test)."""
        for sig, previous in getattr(self, "_previous", {}).items():
            signal.signal(sig, previous)

    def check(self) -> bool:
        if not self.requested and (self.run_dir / run_files.STOP_REQUEST_FILE).exists():
            self.requested = True
        if not self.requested and self.deadline is not None and time.time() > self.deadline:
            from pipelines.hosting import wall_time_reached
            self.requested, self.reason = True, wall_time_reached()
        self.requested = _agree_across_ranks(self.requested)  # every rank then finishes the same way
        return self.requested


def _agree_across_ranks(flag: bool) -> bool:
    """With several GPUs every rank must stop at the same step, or the others hang in a collective."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()

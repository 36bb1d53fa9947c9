"""Start-time checks more than one stage declares (pipelines/stages/__init__.py, `check_start`)."""

from __future__ import annotations

from pipelines.messages import Message

FEW_PAIRS = 8   # below this a preference stage fits its pairs by heart: nothing general is learned


def few_pairs_warning(config, rows: list) -> list[Message]:
    """A preference run on a handful of pairs starts, but says that it can only learn those pairs."""
    if len(rows) >= FEW_PAIRS:
        return []
    return [Message("check.few_pairs", dataset=config.dataset, rows=len(rows), stage=config.stage.upper(),
                    enough=FEW_PAIRS)]

"""Start-time checks more than one stage declares (pipelines/stages/__init__.py, `check_start`)."""

from __future__ import annotations

from pipelines.messages import text

FEW_PAIRS = 8   # below this a preference stage fits its pairs by heart: nothing general is learned


def few_pairs_warning(config, rows: list) -> list[str]:
    """A preference run on a handful of pairs starts, but says that it can only learn those pairs."""
    if len(rows) >= FEW_PAIRS:
        return []
    return [text("check.few_pairs", dataset=config.dataset, rows=len(rows), stage=config.stage.upper(),
                 enough=FEW_PAIRS)]

"""Import a Hugging Face Hub dataset (id, config, split) as a named workspace dataset.

Rows are streamed, so a huge dataset costs only the rows taken (`max_rows`), and go through the same
checks as an upload. With no network, or with the Hub turned off (HF_HUB_OFFLINE=1), the user gets one
sentence within seconds, never a hang; offline, a dataset already in the app's cache (`<cache>/datasets`) still
imports. An id is only ever looked up on the Hub, never as a folder on this machine.
"""

from __future__ import annotations

import os
import re
from itertools import islice
from pathlib import Path

from pipelines.data.files import check_field_sizes
from pipelines.data.store import check_new_name, free_name, save_records
from pipelines.errors import StudioError, quote
from pipelines.hub_check import check_on_hub, offline_error
from pipelines.messages import Message

# org/name only: a bare name is what `datasets` would also try as a folder beside the app, or as a packaged
# loader ("json", "csv"); "buckets/…" is its route to storage buckets.
DATASET_ID = re.compile(r"(?!buckets/)[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
SPLIT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_ROWS = 10_000   # rows taken unless asked for more (at most a hundred times this)


def import_hub_dataset(repo_id: str, config: str | None, split: str, name: str, workspace: Path,
                       max_rows: int = MAX_ROWS, drop_bad_rows: bool = False, columns: dict | str | None = None,
                       replace: bool = False) -> dict:
    """Fetch up to `max_rows` rows of `repo_id` (config, split), check them and save them as dataset `name`."""
    repo_id, config, split = (repo_id or "").strip(), (config or "").strip() or None, (split or "train").strip()
    if ".." in repo_id or not DATASET_ID.fullmatch(repo_id):
        raise StudioError("data.not_hub_id", repo=quote(repo_id))
    if not SPLIT.fullmatch(split) or (config and not SPLIT.fullmatch(config)):
        raise StudioError("data.bad_hub_split")
    if not 1 <= int(max_rows) <= 100 * MAX_ROWS:
        raise StudioError("data.bad_max_rows", maximum=100 * MAX_ROWS)
    if name is None or (isinstance(name, str) and not name.strip()):   # named after the dataset
        name = free_name(repo_id.split("/")[-1], workspace)
    check_new_name(name, workspace, overwrite=replace)
    records = fetch_rows(repo_id, config, split, int(max_rows))
    if not records:
        raise StudioError("data.hub_no_rows", repo=repo_id, split=split)
    check_field_sizes(repo_id, records)
    from pipelines.hosting import check_data, records_bytes
    check_data(workspace, records_bytes(records), "rows")   # hosted mode: bounded as an upload is
    source = f"hub:{repo_id}" + (f" ({config}, {split})" if config else f" ({split})")
    return {**save_records(records, name, workspace, source, drop_bad_rows, columns, replace), "source": source}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


def fetch_rows(repo_id: str, config: str | None, split: str, max_rows: int) -> list[dict]:
    """The first `max_rows` rows as plain dicts; every failure becomes one sentence."""
    import datasets

    from pipelines.paths import cache_dir

    where = Message("data.hub_where_config", repo=repo_id, config=quote(config)) if config else repo_id
    # hf://datasets/ makes `datasets` look on the Hub only: a plain "org/name" that is also a folder relative to the
    # app's working directory would be read from that folder.
    hub_only, cache = f"hf://datasets/{repo_id}", str(cache_dir() / "datasets")
    try:
        if hub_offline():  # only the local cache can answer; load_dataset knows the Hub is off and fails fast
            dataset = datasets.load_dataset(hub_only, config, split=split, cache_dir=cache)
            return [dict(row) for row in islice(dataset, max_rows)]
        check_on_hub(repo_id, "dataset")
        stream = datasets.load_dataset(hub_only, config, split=split, streaming=True, cache_dir=cache)
        return [dict(row) for row in islice(stream, max_rows)]
    except StudioError:
        raise
    except ConnectionError:
        raise offline_error(repo_id, "dataset") from None
    except ValueError as exc:  # unknown config or split: datasets names the ones that exist
        raise StudioError("data.hub_refused", where=where, problem=_first_line(exc)) from None
    except Exception as exc:  # a dataset that cannot be read (no data files, gated, a broken shard)
        raise StudioError("data.hub_unreadable", where=where, problem=_first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]

"""Whether the Hugging Face Hub knows a model or a dataset: the one check (and wording) of models and data imports.

With no network a lookup would hang for minutes; asked with a timeout, a dead network costs seconds and one sentence.
"""

from __future__ import annotations

from pipelines.errors import StudioError, quote
from pipelines.messages import Message

HUB_TIMEOUT_S = 10
KINDS = ("model", "dataset")   # hub.kind.<kind>, hub.fallback.<kind>


def offline_error(repo_id: str, kind: str) -> StudioError:
    """What a user is told when `repo_id` is not cached and the Hub is turned off (HF_HUB_OFFLINE=1)."""
    return StudioError("hub.offline", repo=quote(repo_id), fallback=Message(f"hub.fallback.{kind}"))


def check_on_hub(repo_id: str, kind: str) -> None:
    """Ask the Hub about the model or dataset `repo_id` within HUB_TIMEOUT_S; refuse in one sentence if it does not
    answer, does not have it, or keeps it gated."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    assert kind in KINDS, kind
    ask = HfApi().model_info if kind == "model" else HfApi().dataset_info
    try:
        ask(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:   # before RepositoryNotFoundError: it is one of them
        raise StudioError("hub.gated", repo=quote(repo_id)) from None
    except RepositoryNotFoundError:
        raise StudioError("hub.not_found", kind=Message(f"hub.kind.{kind}"), repo=quote(repo_id)) from None
    except Exception as exc:  # connection refused, DNS failure, timeout: all mean "cannot reach the Hub"
        raise StudioError("hub.unreachable", repo=quote(repo_id), seconds=HUB_TIMEOUT_S, error=type(exc).__name__,
                          fallback=Message(f"hub.fallback.{kind}")) from None

"""Show a user's mistake as one sentence in the UI (and to API clients), never as a traceback."""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from pipelines.errors import StudioError


def shows_errors(fn):
    """Turn StudioError into gr.Error for plain and generator handlers, keeping the signature for gr.api."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except StudioError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
    return plain

"""The one place where Quire's errors become messages in the browser."""

from __future__ import annotations

import functools
import html
import inspect
from typing import Callable, TypeVar

import gradio as gr

from core.errors import QuireError

F = TypeVar("F", bound=Callable)


def user_errors(fn: F) -> F:
    """Turn a :class:`QuireError` raised by a handler into ``gr.Error(exc.user_message())``.

    Works for plain and generator handlers alike; ``functools.wraps`` keeps the
    signature, so Gradio still sees ``gr.Progress`` defaults and streaming.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except QuireError as exc:
                raise _error(exc) from exc

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QuireError as exc:
            raise _error(exc) from exc

    return wrapper  # type: ignore[return-value]


def _error(exc: QuireError) -> gr.Error:
    # The toast renders HTML, and a message may quote what the user typed or a file's name.
    return gr.Error(html.escape(exc.user_message(), quote=False), print_exception=False)


def warn(exc: QuireError) -> None:
    """Show the error as a warning toast without ending the handler (it can then put things back)."""
    gr.Warning(html.escape(exc.user_message(), quote=False))

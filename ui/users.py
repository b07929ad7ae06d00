"""Who is asking, in a Gradio handler: the user the server's login let in, as a view of :class:`Quire`.

Gradio sets the request of the event being handled in a context variable before each call (and before
each step of a generator handler); its ``username`` is what the server's ``auth_dependency`` returned for
it. Outside an event (a test calling a handler) there is none, and the Quire given is used as it is.
"""

from __future__ import annotations

from gradio.context import LocalContext

from quire.api import Quire


def acting(quire: Quire) -> Quire:
    """``quire`` acting as the user of the event being handled (the access checks are Quire's own)."""
    request = LocalContext.request.get(None)
    name = getattr(request, "username", None) if request is not None else None
    return quire.as_user(name) if name else quire


class UserScoped:
    """A panel whose ``q`` is the Quire of the user whose event it handles."""

    def __init__(self, quire: Quire) -> None:
        self.quire = quire

    @property
    def q(self) -> Quire:
        return acting(self.quire)

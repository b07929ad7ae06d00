"""The document viewer inside the app: an iframe of the server's viewer page (``server/viewer.py``: PDF.js at
the cited page with the quote marked, code with its lines, images with their OCR boxes).

The page itself is served, checked and escaped by the server; this only builds the frame around its URL.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

from ui.render import VIEWER, viewer_url

__all__ = ["cell_url", "frame", "placeholder", "viewer_url"]


def cell_url(session: str, cell_id: int) -> str:
    """The viewer's page for a matrix cell; previous/next step through the session's found cells."""
    return VIEWER + "?" + urlencode({"session": session, "cell": cell_id})


def frame(url: str, name: str) -> str:
    """The viewer as an iframe named ``name`` (a citation marker clicked in the chat loads into it)."""
    return (f'<iframe class="quire-viewer" id="{html.escape(name)}" name="{html.escape(name)}" '
            f'title="Document viewer" src="{html.escape(url)}"></iframe>')


def placeholder(text: str) -> str:
    return f'<div class="quire-viewer-empty" role="status">{html.escape(text)}</div>'

"""The value objects every layer shares: locators, segments and parsed documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SegmentKind = Literal["text", "image"]


@dataclass(frozen=True)
class Locator:
    """Where a segment comes from: a PDF page region, an image, or a file's line range."""

    page: int | None = None  # 1-based PDF page
    bbox: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in PDF points
    path: str | None = None  # file path inside a codebase or archive
    line_start: int | None = None  # 1-based, inclusive
    line_end: int | None = None

    def label(self, *, long: bool = False) -> str:
        """Where this is, for people: "p.3" ("page 3" when ``long``), "a.py:12-30", a path; "" when nowhere."""
        if self.page is not None:
            return f"page {self.page}" if long else f"p.{self.page}"
        if self.path and self.line_start is not None:
            if self.line_end and self.line_end != self.line_start:
                return f"{self.path}:{self.line_start}-{self.line_end}"
            return f"{self.path}:{self.line_start}"
        if self.path:
            return self.path
        return ""

    def place(self, *, long: bool = False) -> str:
        """:meth:`label`, or "whole document" when the citation names no page or line (reports, the UI)."""
        return self.label(long=long) or "whole document"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Locator":
        data = dict(data or {})
        if data.get("bbox") is not None:
            data["bbox"] = tuple(data["bbox"])
        return cls(**data)


@dataclass
class Segment:
    """One piece of the token stream: text, or an image (a stored blob)."""

    kind: SegmentKind
    text: str
    locator: Locator
    tokens: int = 0
    image_sha: str | None = None  # blob id of the image, for image segments
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedDocument:
    """What an extractor returns; storage writes it in one transaction."""

    name: str
    kind: str  # pdf, image, code, text
    segments: list[Segment]
    pages: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.segments)

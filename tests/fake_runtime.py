"""A runtime without a model, found the way a plugin's is (an entry point), for tests that need no real model.

It answers every question with the same cited sentence, one word per Delta, and holds a lock of its
own while a stream is open, as the embedded runtimes do; it keeps every stream it hands out alive,
as a caller's frame or a server's queue may, so only closing a stream lets the next one start.
"""

from __future__ import annotations

import threading
from typing import Iterator

from backend.base import Delta, Event, GenerateOptions, Prompt, Runtime, Usage
from core.errors import BackendError
from core.settings import Settings

ANSWER = 'The pallet count is nineteen [S1] "The pallet count for order 7781 is nineteen".'
ENTRY_POINT = "echo = tests.fake_runtime:EchoRuntime"


class EchoRuntime(Runtime):
    name = "echo"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.busy = threading.Lock()
        self.streams: list[Iterator[Event]] = []

    @property
    def context_window(self) -> int:
        return self.settings.context_window or self.DEFAULT_WINDOW

    @property
    def model_name(self) -> str:
        return "echo"

    def generate(self, prompt: Prompt, options: GenerateOptions) -> Iterator[Event]:
        stream = self._stream(prompt)
        self.streams.append(stream)
        return stream

    def _stream(self, prompt: Prompt) -> Iterator[Event]:
        if not self.busy.acquire(timeout=5):
            raise BackendError("The echo runtime is still answering an earlier question.")
        try:
            words = ANSWER.split(" ")
            for word in words:
                yield Delta(word + " ")
            yield Usage(prompt_tokens=self.count_prompt(prompt), completion_tokens=len(words), finish_reason="stop")
        finally:
            self.busy.release()


def install_plugin(folder, monkeypatch) -> None:
    """Make ``EchoRuntime`` an installed plugin: a distribution whose metadata names it in ``quire.runtimes``."""
    dist = folder / "quire_echo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: quire-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[quire.runtimes]\n{ENTRY_POINT}\n")
    monkeypatch.syspath_prepend(str(folder))

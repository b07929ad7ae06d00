"""Finding runtimes by name. Built-ins register exactly as a plugin would."""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import Callable

from backend.base import Runtime
from core.errors import BackendError, RuntimeUnavailable
from core.settings import Settings

ENTRY_POINT_GROUP = "quire.runtimes"

# name -> "module:Class"; imported only when that runtime is asked for.
_registry: dict[str, str | Callable[[], type[Runtime]]] = {}


def register(name: str, target: str | Callable[[], type[Runtime]]) -> None:
    _registry[name] = target


register("llamacpp", "backend.llamacpp:LlamaCppRuntime")
register("sglang", "backend.sglang_runtime:SGLangRuntime")
register("openai", "backend.openai_compat:OpenAIRuntime")


def available() -> list[str]:
    names = set(_registry)
    try:
        names.update(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # noqa: BLE001 - broken third-party metadata must not stop Quire
        pass
    return sorted(names)


def runtime_class(name: str) -> type[Runtime]:
    target = _registry.get(name)
    if target is None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                return ep.load()
        raise BackendError(f"Unknown runtime {name!r}.", hint=f"Choose one of: {', '.join(available())}.")
    if callable(target):
        return target()
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def resolve_name(settings: Settings) -> str:
    """``auto``: a remote endpoint if one is set, SGLang where it imports and CUDA exists, else the CPU default."""
    if settings.runtime != "auto":
        return settings.runtime
    if settings.endpoint:
        return "openai"
    if _sglang_usable():
        return "sglang"
    return "llamacpp"


def _sglang_usable() -> bool:
    if importlib.util.find_spec("sglang") is None or importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch  # lazily: a GPU-only dependency of seconds to import, asked only when auto must choose

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch means: no GPU runtime
        return False


def create_runtime(settings: Settings) -> Runtime:
    name = resolve_name(settings)
    cls = runtime_class(name)
    try:
        return cls(settings)
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"The {name} runtime cannot start: {exc}.",
            hint="Install its requirements (see README) or choose another --runtime.",
        ) from exc

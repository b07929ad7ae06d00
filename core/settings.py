"""One settings object for the CLI, the environment, the UI and the Python API.

Every field carries its help text in ``metadata["help"]``; ``add_arguments``
turns the fields into argparse flags and ``from_env`` reads ``QUIRE_*``
variables, so there is exactly one place where an option is declared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

ENV_PREFIX = "QUIRE_"
DEFAULT_WINDOW = 8192  # tokens, until a runtime says (SmolLM2's own; a remote server that reports none)
STRATEGIES = ("auto", "full", "focus", "sweep")  # how a question's context is chosen (see backend/context.py)
RANKS = ("lexical", "hybrid")  # how focus ranks passages (see backend/ranking.py)


def _opt(default: Any, help: str, *, flag: bool = True, choices: tuple | None = None) -> Any:
    meta = {"help": help, "flag": flag, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_home() -> Path:
    return Path(os.environ.get("QUIRE_HOME") or Path.home() / ".quire")


@dataclass
class Settings:
    """Everything Quire can be told. Field help texts double as ``--help``."""

    home: Path = _opt(None, "Data directory (database, page images, caches). Env: QUIRE_HOME.")
    database_url: str = _opt(
        "",
        "SQLAlchemy URL of the database; empty is SQLite in the data directory (quire.db). A team server with "
        "several app processes: postgresql+psycopg://USER:PASSWORD@HOST/DB (the same migrations run on it).",
    )
    blob_dir: Path = _opt(
        None,
        "Directory of the stored originals and page images (content-addressed, safe to share between app "
        "processes on one database); empty is blobs/ in the data directory.",
    )
    user: str = _opt("", "Act as this user in the CLI and the MCP server (empty: the local user, or the only admin).")
    auth_header: str = _opt(
        "",
        "Trust the user name in this request header (e.g. X-Forwarded-User), set by a single sign-on reverse "
        "proxy; only from --trusted-proxies. Empty: no header login.",
    )
    trusted_proxies: str = _opt(
        "127.0.0.1,::1",
        "Addresses or networks (comma-separated, e.g. 10.0.0.5,10.1.0.0/16) whose --auth-header is believed.",
    )
    allow_anonymous: bool = _opt(
        False,
        "Serve on an address other than loopback without accounts or --auth-header: everyone who reaches the "
        "port is the local user. Refused without it.",
    )
    host: str = _opt("127.0.0.1", "Interface the web UI listens on.")
    allowed_hosts: str = _opt(
        "",
        "Names the web UI answers to in the Host header, comma-separated (e.g. quire.lan,192.168.1.20), besides "
        "the loopback names (localhost, 127.0.0.1, ::1) and --host; any other Host gets 400, which stops DNS "
        "rebinding. '*' answers to any name.",
    )
    port: int = _opt(7860, "Port the web UI listens on.")
    runtime: str = _opt(
        "auto",
        "LLM runtime: auto, llamacpp (embedded CPU), sglang (embedded GPU), openai (remote server), "
        "or one a plugin registers (entry point group quire.runtimes).",
    )  # the choices are the registry's (backend/registry.py): the CLI passes them to add_arguments
    model: str = _opt(
        "",
        "Model: a GGUF path for llamacpp, a model path or hub id for sglang, a served name for openai. "
        "Empty means the bundled SmolLM2-135M-Instruct for llamacpp.",
    )
    endpoint: str = _opt("", "Base URL of an OpenAI-compatible server (SGLang, vLLM, llama.cpp server).")
    api_key: str = _opt("", "API key for the remote endpoint, if it needs one. Env: QUIRE_API_KEY.")
    context_window: int = _opt(0, f"Context window in tokens; 0 takes the runtime's own ({DEFAULT_WINDOW} for SmolLM2).")
    max_answer_tokens: int = _opt(384, "Most tokens an answer may have.")
    temperature: float = _opt(0.0, "Sampling temperature; 0 is deterministic.")
    seed: int = _opt(0, "Sampling seed.")
    repeat_penalty: float = _opt(
        0.0, "Repetition penalty (1 is none); 0 takes the runtime's own (1 for every built-in runtime: on SmolLM2, 1.1 "
        "stopped three looping prompts but lost the cited answer of a simple question; the loop guard stops repeats)."
    )
    matrix_answer_tokens: int = _opt(
        64, "Most tokens of one matrix extraction (a short answer, its quote and passage id), per shard and field."
    )
    sweep_answer_tokens: int = _opt(
        160, "Most tokens of one sweep part's findings (the final answer has --max-answer-tokens). The shards "
        "the sweep and the matrix read leave room for the larger of this and --matrix-answer-tokens, so both "
        "cut a session the same way and share each shard's KV state."
    )
    warm_shards: str = _opt(
        "off",
        "Prepare the session's shards after an upload, in the background at low priority (a question or matrix "
        "run goes first and interrupts it), so the first sweep or matrix question loads their KV states instead "
        "of reading: 'off', 'on', or 'ac' (only when the machine is not on battery, as far as it can be told).",
        choices=("off", "on", "ac"),
    )
    threads: int = _opt(0, "CPU threads for the embedded CPU runtime; 0 uses every core.")
    strategy: str = _opt(
        "auto",
        "Context strategy: auto, full (everything fits), focus (most relevant passages), "
        "sweep (map-reduce over the whole corpus, for questions about every document).",
        choices=STRATEGIES,
    )
    rank: str = _opt(
        "lexical",
        "How focus ranks passages for a question: 'lexical' (full-text search, bm25 over word stems, the query "
        "expanded with the words filings use) or 'hybrid' (that fused with the bundled WordLlama embedding model by "
        "reciprocal rank; measured by `app.py eval evidence`, it gained nothing reliable on contracts and filings).",
        choices=RANKS,
    )
    expand_queries: bool = _opt(
        True, "Focus adds to a question the words its kind of document uses for what it names (\"capex\": purchases "
        "of property, plant and equipment; \"governing law\": governed by the laws of), see backend/expansion.py."
    )
    document_quota: bool = _opt(
        True, "Focus gives every document its rank found an even share of the window first, so one long document "
        "cannot crowd the others out of a question about all of them."
    )
    model_timeout_s: int = _opt(
        300, "Longest silence from the CPU model's process before it counts as hung, is stopped and restarted, in "
        "seconds (it reports progress about once a second while it computes)."
    )
    prefix_cache_mb: int = _opt(
        4096, "Disk the CPU runtime may use to keep corpus and shard KV states between runs, in MiB (least "
        "recently used go first); 0 turns it off. A state takes about 22 MiB per 1K tokens with SmolLM2 at f16."
    )
    kv_cache_type: str = _opt(
        "f16",
        "Type of the CPU runtime's KV cache, and so of the states kept on disk: 'f16', or 'q8_0' (about half the "
        "memory and disk; llama.cpp needs flash attention for it, which is turned on with it). f16 stays the default: "
        "on the needle eval at a 2K window q8_0 missed 1 of 10 needles that f16 found.",
        choices=("f16", "q8_0"),
    )
    workers: int = _opt(
        0, "Processes that read files in parallel during ingestion; 0 uses every core; 1 reads in the app's own process."
    )
    file_timeout_s: int = _opt(600, "Longest time one file may take to read before it is stopped and reported, in seconds.")
    worker_memory_mb: int = _opt(
        0,
        "Most memory (address space) one reading process may use, in MiB: a file that needs more is stopped "
        "and reported as too large to read safely, and the batch goes on. 0 sizes it to the machine: an even "
        "share of three quarters of its memory, at least 3072 (1024 and 160 a core on more than 12 cores). It "
        "bounds the worker processes, not the app itself (--workers 1 reads in the app's own process, unbounded).",
    )
    ocr: bool = _opt(True, "Read scanned pages and images with OCR (about 7 s a page on a CPU).")
    max_pdf_pages: int = _opt(5000, "Most pages read from one PDF; longer ones are refused with a message.")
    max_image_megapixels: int = _opt(100, "Largest image accepted, in megapixels (bigger ones are refused before decoding).")
    pdf_tables: str = _opt(
        "ruled",
        "Tables read from PDFs as Markdown: 'ruled' (tables drawn with rules; fast), 'layout' (also tables "
        "without rules, found by PyMuPDF's layout model on pages whose short lines stand in columns; about "
        "0.1-0.6 s more for each such page) or 'off'.",
        choices=("ruled", "layout", "off"),
    )
    render_pages: str = _opt(
        "scans",
        "Page images stored at ingest: 'scans' (pages without a text layer; text pages keep a thumbnail and "
        "are rendered when first viewed) or 'all'.",
        choices=("scans", "all"),
    )
    render_dpi: int = _opt(110, "Resolution of stored PDF page images, in dots per inch.")
    max_file_mb: int = _opt(512, "Largest input file accepted, in MiB.")
    code_file_kb: int = _opt(1024, "Largest source file taken from a codebase, in KiB (bigger ones are listed as skipped).")
    tp_size: int = _opt(1, "SGLang tensor-parallel size (GPUs per model replica).")
    dp_size: int = _opt(1, "SGLang data-parallel size (model replicas).")
    chunked_prefill_size: int = _opt(0, "SGLang chunked prefill size in tokens; 0 keeps SGLang's default.")
    preset: str = _opt("", "Serving preset: llama4-scout, qwen2.5-vl-7b, qwen3-vl-8b; empty picks one from the model name.")
    mem_fraction_static: float = _opt(0.0, "SGLang's static GPU memory share (weights + KV cache); 0 keeps SGLang's default.")
    enable_hierarchical_cache: bool = _opt(False, "SGLang: let the prefix cache spill to host memory.")
    hicache_storage_backend: str = _opt(
        "", "SGLang with --enable-hierarchical-cache: a third cache tier below host memory, e.g. 'file' (pages on "
        "disk under $SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR), so shard prefixes outlive host memory and restarts."
    )
    multimodal: bool = _opt(False, "Send page images to a remote model even when its name matches no known vision model.")
    chat_template: str = _opt("", "SGLang chat template name (e.g. llama-4); empty lets SGLang choose.")
    log_level: str = _opt("warning", "Log level: debug, info, warning, error.")

    def __post_init__(self) -> None:
        if self.home is None:
            self.home = default_home()
        self.home = Path(self.home).expanduser()
        self.blob_dir = Path(self.blob_dir).expanduser() if self.blob_dir else self.home / "blobs"
        if self.port <= 0 or self.port > 65535:
            raise ValueError(f"--port must be between 1 and 65535, not {self.port}")
        if self.max_answer_tokens < 1:
            raise ValueError("--max-answer-tokens must be at least 1")

    # -- derived paths -------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "quire.db"

    @property
    def db_url(self) -> str:
        """The database to open: --database-url, else SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.db_path}"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    # -- construction --------------------------------------------------
    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env and env[key] != "":
                values[f.name] = _coerce(f, env[key])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
                      choices: dict[str, Sequence[str]] | None = None) -> None:
        """One flag per field. ``choices`` gives the allowed values of fields whose values are found at
        run time rather than declared here (``runtime``: the registered runtimes)."""
        for f in fields(cls):
            if not f.metadata.get("flag", True) or (only and f.name not in only):
                continue
            kwargs: dict[str, Any] = {"help": f.metadata["help"], "default": argparse.SUPPRESS, "dest": f.name}
            allowed = (choices or {}).get(f.name) or f.metadata.get("choices")
            if allowed:
                kwargs["choices"] = tuple(allowed)
            kwargs["type"] = _arg_type(f)
            parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        names = {f.name for f in fields(cls)}
        return cls.from_env(**{k: v for k, v in vars(args).items() if k in names})

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, value, help) rows, used by the UI settings panel."""
        return [(f.name, getattr(self, f.name), f.metadata["help"]) for f in fields(self)]


def _arg_type(f: dataclasses.Field) -> Any:
    default = f.default
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if f.name in ("home", "blob_dir"):
        return Path
    return str


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    return _arg_type(f)(raw)

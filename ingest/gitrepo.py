"""A local git repository read at HEAD: the committed tree and its blobs, never the work tree.

Git runs without the caller's ``GIT_*`` variables, with no repository above the root
(``GIT_CEILING_DIRECTORIES``), no fsmonitor hook, and no pager; paths and contents are
only ever data handed to ``git`` through arguments or its stdin, never through a shell.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator

TIMEOUT_S = 120


@dataclass
class Entry:
    path: str
    mode: str  # 100644, 100755, 120000 (symlink), 160000 (submodule)
    sha: str
    size: int


@dataclass
class HeadTree:
    commit: str
    entries: list[Entry] = field(default_factory=list)
    changed: int = 0  # tracked files whose work-tree copy differs from HEAD (read as committed)


def _git(root: str) -> list[str] | None:
    git = shutil.which("git")
    if git is None or not os.path.exists(os.path.join(root, ".git")):
        return None
    return [git, "-c", "core.fsmonitor=false", "-c", "core.quotepath=off", "-C", root]


def _env(root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(root)  # never use a repository above the root
    env["GIT_NO_PAGER"] = "1"
    return env


def _run(root: str, *args: str) -> bytes | None:
    base = _git(root)
    if base is None:
        return None
    try:
        out = subprocess.run([*base, *args], capture_output=True, timeout=TIMEOUT_S, check=True,
                             env=_env(root), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def head_tree(root: str) -> HeadTree | None:
    """The files committed at HEAD, or None when there is no usable repository or no commit yet."""
    commit = _run(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if not commit:
        return None
    listing = _run(root, "ls-tree", "-r", "-z", "-l", "--full-tree", "HEAD")
    if listing is None:
        return None
    tree = HeadTree(commit.decode().strip())
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, sha, size = meta.split()
        tree.entries.append(Entry(os.fsdecode(path), mode.decode(), sha.decode(),
                                  int(size) if kind == b"blob" else 0))
    status = _run(root, "status", "--porcelain", "-z", "--untracked-files=no", "--ignore-submodules")
    tree.changed = sum(1 for r in (status or b"").split(b"\0") if r[:2].strip() and r[2:3] == b" ")
    return tree


def tracked_paths(root: str) -> list[str] | None:
    """Paths in the index (a repository without a commit yet), or None."""
    out = _run(root, "ls-files", "-z", "--cached")
    return None if out is None else sorted({os.fsdecode(p) for p in out.split(b"\0") if p})


def read_blobs(root: str, shas: Iterable[str]) -> Iterator[bytes | None]:
    """The contents of the given blobs, in order, streamed through one ``git cat-file --batch``."""
    base = _git(root)
    wanted = list(shas)
    if base is None:
        yield from (None for _ in wanted)
        return
    proc = subprocess.Popen([*base, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_env(root))

    def feed() -> None:
        try:
            for sha in wanted:
                proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        for _ in wanted:
            header = proc.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                yield None  # "<sha> missing": a shallow or damaged repository
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each object
            yield data
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
        writer.join(timeout=5)


def link_target(path: str, target: bytes) -> str | None:
    """Where a committed symlink points, as a path inside the tree, or None when it leaves it."""
    text = os.fsdecode(target)
    if text.startswith("/"):
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), text))
    return None if resolved == ".." or resolved.startswith("../") else resolved

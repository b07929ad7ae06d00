"""Safe, in-place reading of zip and tar archives (nothing is ever extracted by a member's name).

A member is offered only if its path stays inside the archive (no absolute
paths, drive letters or ``..``) and it is a regular file. Links, special files,
encrypted members and members that look like compression bombs are refused and
reported in ``skipped``; an archive whose members add up past the limits is
refused as a whole with :class:`TooLarge`. A member's data is read into memory
(:meth:`ArchiveReader.read`) or copied into a file the caller opened
(:meth:`ArchiveReader.copy`), never to a path made from its name.
"""

from __future__ import annotations

import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from core.errors import CorruptFile, TooLarge

COPY_CHUNK = 1 << 20  # a member is copied out this much at a time, never held whole in memory
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may expand to before it is treated as a bomb."""

    max_members: int = 50_000
    max_total_bytes: int = 2 << 30  # sum of all members' uncompressed sizes
    max_member_bytes: int = 1 << 20  # members above this are skipped, not read
    max_ratio: float = 100.0  # uncompressed / compressed, per zip member and per tar stream
    ratio_floor: int = 64 << 10  # below this size a member's high ratio is harmless
    ratio_total_floor: int = 50 << 20  # below this expansion a whole archive's high ratio is harmless

    @classmethod
    def from_settings(cls, settings) -> "ArchiveLimits":
        return cls(
            max_total_bytes=max(256 << 20, 4 * settings.max_file_mb << 20),
            max_member_bytes=settings.code_file_kb << 10,
        )


@dataclass
class Member:
    path: str  # POSIX path inside the archive, normalised
    size: int


@dataclass
class Listing:
    kind: str  # zip | tar
    members: list[Member] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    small: dict[str, bytes] = field(default_factory=dict)  # kept data of the members asked for while listing
    stopped: str = ""  # the member a tar's listing stopped at (``until``): what follows it is not listed


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_member_path(name: str) -> str | None:
    """The normalised POSIX path of a member, or None when it could land outside the archive."""
    name = name.replace("\\", "/")
    if not name or "\0" in name or name.startswith("/") or _DRIVE.match(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _link_reason(path: str, target: str, *, hard: bool = False) -> str:
    """Links are never followed; say whether this one would have escaped the archive."""
    target = target.replace("\\", "/")
    joined = target if hard else posixpath.join(posixpath.dirname(path), target)
    if target.startswith("/") or _DRIVE.match(target) or _escapes(joined):
        return f"link pointing outside the archive ({target}): refused"
    return "link (not followed)"


def _escapes(path: str) -> bool:
    depth = 0
    for part in path.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


class ArchiveReader:
    """Lists and reads one archive; use as a context manager."""

    def __init__(self, path: Path, name: str, limits: ArchiveLimits) -> None:
        self.path, self.name, self.limits = path, name, limits
        self.size_on_disk = max(1, path.stat().st_size)
        self._zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}

    def __enter__(self) -> "ArchiveReader":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()

    # -- listing ----------------------------------------------------------
    def list(self, keep: set[str] = frozenset(),
             until: Callable[[str, Listing], bool] | None = None) -> Listing:
        """Every safe regular member; data of members whose base name is in ``keep`` is read now.

        A tar is a stream that must be decompressed to be listed (a second for a 74 MB ``.tgz``): ``until``, asked
        of each member with the listing so far, stops it there (``Listing.stopped``). A zip's directory is read
        whole, cheaply, and is always listed in full."""
        try:
            if zipfile.is_zipfile(self.path):
                return self._list_zip(keep)
            return self._list_tar(keep, until)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptFile(self.name, f"is not a readable zip or tar archive ({exc}).",
                              hint="Check that the download finished, or re-create the archive.") from exc

    def _list_zip(self, keep: set[str]) -> Listing:
        self._zip = zipfile.ZipFile(self.path)
        listing = Listing("zip")
        infos = self._zip.infolist()
        self._check_count(len(infos))
        total = sum(i.file_size for i in infos)
        self._check_total(total)
        self._check_ratio(total, self.size_on_disk)
        for info in infos:
            if info.is_dir():
                continue
            path = safe_member_path(info.filename)
            reason = self._zip_refusal(info, path)
            if reason:
                listing.skipped.append({"path": path or info.filename, "reason": reason})
                continue
            self._infos[path] = info
            listing.members.append(Member(path, info.file_size))
            if path.rsplit("/", 1)[-1] in keep and info.file_size <= self.limits.max_member_bytes:
                listing.small[path] = self._read_zip(info)
        return listing

    def _zip_refusal(self, info: zipfile.ZipInfo, path: str | None) -> str:
        if path is None:
            return "unsafe path (absolute or outside the archive): refused"
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            return "link (not followed)"
        if mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            return "special file"
        if info.flag_bits & 0x1:
            return "encrypted member"
        big = info.file_size > self.limits.ratio_floor
        if big and info.file_size > self.limits.max_ratio * max(1, info.compress_size):
            ratio = info.file_size / max(1, info.compress_size)
            return f"possible zip bomb (compression ratio {ratio:.0f}:1): refused"
        return ""

    def _list_tar(self, keep: set[str], until: Callable[[str, Listing], bool] | None = None) -> Listing:
        listing = Listing("tar")
        for ti, path, fh in self._walk_tar():
            reason = self._tar_refusal(ti, path)
            if reason:
                if reason != "-":
                    listing.skipped.append({"path": path or ti.name, "reason": reason})
                continue
            listing.members.append(Member(path, ti.size))
            if path.rsplit("/", 1)[-1] in keep and ti.size <= self.limits.max_member_bytes:
                listing.small[path] = fh.extractfile(ti).read(ti.size)
            if until is not None and until(path, listing):
                listing.stopped = path
                break
        return listing

    def _tar_refusal(self, ti: tarfile.TarInfo, path: str | None) -> str:
        if ti.isdir():
            return "-"
        if path is None:
            return "unsafe path (absolute or outside the archive): refused"
        if ti.issym() or ti.islnk():
            return _link_reason(path, ti.linkname, hard=ti.islnk())
        if not ti.isreg():
            return "special file"
        return ""

    def _walk_tar(self) -> Iterator[tuple[tarfile.TarInfo, str | None, tarfile.TarFile]]:
        """Stream the tar once, enforcing member count, total size and stream ratio as it goes."""
        with open(self.path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
            count = total = 0
            for ti in tf:
                count += 1
                total += max(0, ti.size)
                self._check_count(count)
                self._check_total(total)
                self._check_ratio(ti.offset, raw.tell())  # decompressed so far vs read from disk so far
                yield ti, safe_member_path(ti.name), tf

    # -- limits -----------------------------------------------------------
    def _check_count(self, count: int) -> None:
        if count > self.limits.max_members:
            raise TooLarge(self.name, f"has more than {self.limits.max_members:,} members.",
                           hint="Archive only the source folders you want analysed.")

    def _check_total(self, total: int) -> None:
        if total > self.limits.max_total_bytes:
            raise TooLarge(self.name, f"expands to more than {self.limits.max_total_bytes >> 20:,} MiB.",
                           hint="Refused as a possible archive bomb; archive only the source you need.")

    def _check_ratio(self, expanded: int, compressed: int) -> None:
        if expanded > self.limits.ratio_total_floor and expanded > self.limits.max_ratio * max(1, compressed):
            raise TooLarge(self.name, f"expands {expanded / max(1, compressed):.0f} times its size.",
                           hint="Refused as a possible archive bomb; re-create the archive from the source files.")

    # -- reading ----------------------------------------------------------
    def read(self, wanted: set[str]) -> Iterator[tuple[str, bytes | None, str]]:
        """(path, data, problem) for each wanted member, in archive order; data is None on a problem."""
        if self._zip is not None:
            for path, info in self._infos.items():
                if path in wanted:
                    yield self._read_zip_safely(path, info)
            return
        for ti, path, tf in self._walk_tar():
            if path in wanted and ti.isreg():
                data = tf.extractfile(ti).read(ti.size + 1)
                yield (path, data, "") if len(data) == ti.size else (path, None, "truncated member")

    def copy(self, wanted: set[str], open_target: Callable[[str], BinaryIO]) -> Iterator[tuple[str, str]]:
        """(path, problem) for each wanted member, in archive order, its data written in chunks to the file
        ``open_target(path)`` returns, which is closed after; problem is "" when the member was copied whole.
        Where the data goes is the caller's choice: nothing here makes a path from a member's name.

        A damaged tar stream ends the walk: the member being copied then has a problem, and the wanted members
        after it are not yielded at all."""
        if self._zip is not None:
            for path, info in self._infos.items():
                if path in wanted:
                    yield path, self._copy_zip(info, open_target(path))
            return
        current = None
        try:
            for ti, path, tf in self._walk_tar():
                if path in wanted and ti.isreg():
                    current = path
                    with open_target(path) as out:
                        copied = _copy(tf.extractfile(ti), out, ti.size)
                    current = None
                    yield path, "" if copied == ti.size else "truncated member"
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            if current is not None:
                yield current, f"unreadable member ({exc})"

    def _copy_zip(self, info: zipfile.ZipInfo, out: BinaryIO) -> str:
        try:
            with out, self._zip.open(info) as src:  # reading to the end checks the member's CRC
                copied = _copy(src, out, info.file_size)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError, zlib.error) as exc:
            return f"unreadable member ({exc})"
        return "" if copied == info.file_size else "size differs from its header"

    def _read_zip_safely(self, path: str, info: zipfile.ZipInfo) -> tuple[str, bytes | None, str]:
        try:
            return path, self._read_zip(info), ""
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError) as exc:
            return path, None, f"unreadable member ({exc})"

    def _read_zip(self, info: zipfile.ZipInfo) -> bytes:
        with self._zip.open(info) as fh:  # never trust the header: read one byte past it
            data = fh.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise ValueError("size differs from its header")
        return data


def _copy(src: BinaryIO, out: BinaryIO, size: int) -> int:
    """Copy at most ``size`` + 1 bytes (one past the header's size shows a header that lies); the count copied."""
    copied = 0
    while copied <= size:
        block = src.read(min(COPY_CHUNK, size + 1 - copied))
        if not block:
            break
        out.write(block)
        copied += len(block)
    return copied

"""Codebase ingestion: real stdlib trees, ignore rules, git, archives and their attacks."""

from __future__ import annotations

import inspect
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from core.errors import CorruptFile, EmptyFile, IngestError, TooLarge
from ingest.archive import ArchiveLimits, ArchiveReader, safe_member_path
from ingest.base import registry
from ingest.code import extract_archive, extract_codebase, extract_source_file
from ingest.lines import CHUNK_LINES, numbered_chunks

STDLIB_JSON = Path(json.__file__).parent


def _files(doc) -> set[str]:
    return {s.locator.path for s in doc.segments if s.locator.path != "<tree>"}


def _segment_at(doc, path: str, line: int):
    for seg in doc.segments:
        if seg.locator.path == path and seg.locator.line_start <= line <= seg.locator.line_end:
            return seg
    raise AssertionError(f"no segment covers {path}:{line}")


def _line_text(seg, line: int) -> str:
    for row in seg.text.split("\n")[1:]:
        number, _, text = row.partition("\t")
        if int(number) == line:
            return text
    raise AssertionError(f"line {line} not in {seg.locator.label()}")


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


# -- real trees ----------------------------------------------------------------
def test_stdlib_json_anchors_match_inspect(ctx):
    doc = extract_codebase(STDLIB_JSON, ctx)
    assert doc.kind == "code"
    expected = sorted(p.name for p in STDLIB_JSON.glob("*.py"))
    assert doc.meta["files"] == len(expected)
    assert doc.meta["languages"] == {"python": len(expected)}
    assert doc.segments[0].locator.path == "<tree>"
    for name in expected:
        assert name in doc.meta["tree"]
    lines, start = inspect.getsourcelines(json.dumps)
    seg = _segment_at(doc, "__init__.py", start)
    assert _line_text(seg, start) == lines[0].rstrip("\n")
    assert seg.meta["language"] == "python"
    assert seg.tokens > 0 and doc.tokens == sum(s.tokens for s in doc.segments)
    assert not any(s.locator.path.startswith("__pycache__") for s in doc.segments)


def test_stdlib_email_nested_paths_and_tree(ctx):
    import email.mime.text

    root = Path(email.__file__).parent
    doc = extract_codebase(root, ctx)
    lines, start = inspect.getsourcelines(email.mime.text.MIMEText)
    seg = _segment_at(doc, "mime/text.py", start)
    assert _line_text(seg, start) == lines[0].rstrip("\n")
    assert seg.text.startswith("File: mime/text.py (lines ")
    tree = doc.segments[0].text
    assert "\nmime/\n" in tree and "\n  text.py (" in tree
    # every file is covered line by line, without gaps or overlaps
    by_file: dict[str, list] = {}
    for s in doc.segments[1:]:
        by_file.setdefault(s.locator.path, []).append((s.locator.line_start, s.locator.line_end))
    for rel, spans in by_file.items():
        n = len((root / rel).read_text(encoding="utf-8").split("\n"))
        assert spans[0][0] == 1
        assert all(b + 1 == c for (_, b), (c, _) in zip(spans, spans[1:]))
        assert spans[-1][1] in (n, n - 1)
        assert all(b - a < CHUNK_LINES for a, b in spans)


# -- ignore rules --------------------------------------------------------------
def test_nested_gitignore_exclude_and_quireignore(tmp_path, ctx):
    root = tmp_path / "proj"
    _write(root, {
        ".gitignore": "*.log\nsecret/\n",
        ".quireignore": "docs/\n",
        ".git/info/exclude": "local.txt\n",
        "app.py": "print('app')\n",
        "run.log": "noise\n",
        "secret/key.py": "KEY = 1\n",
        "docs/guide.md": "# guide\n",
        "local.txt": "mine\n",
        "pkg/.gitignore": "gen_*.py\n!keep.log\n",
        "pkg/mod.py": "def f():\n    return 1\n",
        "pkg/gen_x.py": "x = 1\n",
        "pkg/keep.log": "kept by a nested negation\n",
        "other/gen_y.py": "y = 2\n",
        "node_modules/lib/index.js": "module.exports = 1\n",
        "package-lock.json": "{}\n",
        "env1/pyvenv.cfg": "home = /usr\n",
        "env1/lib/site.py": "x = 1\n",
        "venv/__init__.py": "# a package that happens to be called venv\n",
        "web/app.min.js": "var a=1;\n",
    })
    doc = extract_codebase(root, ctx)
    assert _files(doc) == {".gitignore", ".quireignore", "app.py", "pkg/.gitignore", "pkg/mod.py",
                           "pkg/keep.log", "other/gen_y.py", "venv/__init__.py"}
    assert doc.meta["ignored"] >= 8
    assert doc.meta["source"] == "folder"


def test_binary_oversized_generated_are_reported(tmp_path, ctx):
    root = tmp_path / "proj"
    _write(root, {
        "main.py": "import os\n",
        "logo.png": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "data.dat": b"abc\x00\x01\x02" * 50,
        "big.py": "x = 1\n" * 8000,
        "api_pb2.py": "# protobuf\n",
        "schema.py": "# @generated by a tool\nA = 1\n",
        "bundle.js": "var x=" + "1+" * 15_000 + "1;",
    })
    ctx.settings = ctx.settings.replace(code_file_kb=32)
    doc = extract_codebase(root, ctx)
    reasons = {s["path"]: s["reason"] for s in doc.meta["skipped"]}
    assert doc.meta["skipped_count"] == 6
    assert reasons["logo.png"] == "binary" and reasons["data.dat"] == "binary"
    assert reasons["big.py"].startswith("too large")
    assert reasons["api_pb2.py"] == "generated" and reasons["schema.py"] == "generated"
    assert reasons["bundle.js"].startswith("generated")
    assert _files(doc) == {"main.py"}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_symlinks_never_leave_the_root(tmp_path, ctx):
    root = tmp_path / "proj"
    _write(root, {"a.py": "A = 1\n", "sub/b.py": "B = 2\n"})
    (tmp_path / "outside.py").write_text("SECRET = 42\n")
    os.symlink(tmp_path / "outside.py", root / "escape.py")
    os.symlink(root / "a.py", root / "alias.py")
    os.symlink(root / "sub", root / "subdir_link")
    os.symlink(tmp_path / "missing.py", root / "broken.py")
    doc = extract_codebase(root, ctx)
    reasons = {s["path"]: s["reason"] for s in doc.meta["skipped"]}
    assert "outside" in reasons["escape.py"]
    assert "not followed" in reasons["subdir_link"]
    assert "broken.py" in reasons
    assert _files(doc) == {"a.py", "alias.py", "sub/b.py"}
    assert not any("SECRET" in s.text for s in doc.segments)


def test_empty_tree_is_refused(tmp_path, ctx):
    root = tmp_path / "proj"
    _write(root, {"node_modules/x.js": "1\n", "pic.png": b"\x89PNG" + bytes(10)})
    with pytest.raises(EmptyFile, match="proj"):
        extract_codebase(root, ctx)


def test_progress_and_cancel(tmp_path, ctx):
    root = tmp_path / "proj"
    _write(root, {f"m{i}.py": f"X = {i}\n" for i in range(40)})
    events = []
    ctx.progress = events.append
    extract_codebase(root, ctx)
    assert events and all(e.stage == "source" and e.name == "proj" for e in events)
    assert events[-1].done == events[-1].total == 40 and events[-1].message.endswith(".py")
    ctx.cancelled = lambda: True
    with pytest.raises(IngestError, match="cancelled"):
        extract_codebase(root, ctx)


# -- git ----------------------------------------------------------------------
def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(root), *args],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_repo_takes_tracked_files_only(tmp_path, ctx):
    root = tmp_path / "repo"
    _write(root, {"a.py": "A = 1\n", "lib/b.py": "B = 2\n", ".gitignore": "*.tmp\n", "forced.tmp": "tracked anyway\n"})
    (tmp_path / "secret.py").write_text("SECRET = 42\n")
    os.symlink(tmp_path / "secret.py", root / "out.py")
    _git(root, "init", "-q")
    _git(root, "add", "a.py", "lib/b.py", ".gitignore", "out.py")
    _git(root, "add", "-f", "forced.tmp")
    _git(root, "commit", "-q", "-m", "init")
    _write(root, {"untracked.py": "U = 3\n", "lib/new.py": "N = 4\n"})
    doc = extract_codebase(root, ctx)
    assert doc.meta["source"] == "git"
    assert _files(doc) == {"a.py", "lib/b.py", ".gitignore", "forced.tmp"}
    assert {s["path"]: s["reason"] for s in doc.meta["skipped"]}["out.py"].startswith("symlink pointing outside")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_repo_is_read_at_head_not_from_the_work_tree(tmp_path, ctx):
    root = tmp_path / "repo"
    _write(root, {"a.py": "COMMITTED = 1\n", "docs/guide.md": "# Guide\n", "gone.py": "G = 1\n",
                  ".quireignore": "docs/\n"})
    os.symlink("a.py", root / "alias.py")  # inside the tree: followed to the committed file
    os.symlink("docs", root / "docs_link")  # a folder: not followed
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    blob = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD:a.py"], capture_output=True, text=True,
                          check=True).stdout.strip()
    _git(root, "update-index", "--add", "--cacheinfo", f"160000,{blob},vendor/sub")  # a submodule entry
    _git(root, "commit", "-q", "-m", "sub")
    (root / "a.py").write_text("EDITED_BUT_NOT_COMMITTED = 2\n")
    (root / "gone.py").unlink()
    doc = extract_codebase(root, ctx)
    assert doc.meta["source"] == "git"
    assert _files(doc) == {"a.py", "alias.py", "gone.py", ".quireignore"}
    assert "COMMITTED = 1" in _segment_at(doc, "a.py", 1).text
    assert "COMMITTED = 1" in _segment_at(doc, "alias.py", 1).text
    assert "gone.py" in {s.locator.path for s in doc.segments}  # deleted locally, still in HEAD
    reasons = {s["path"]: s["reason"] for s in doc.meta["skipped"]}
    assert reasons["vendor/sub"].startswith("submodule")
    assert reasons["docs_link"].startswith("symlinked folder")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert doc.meta["git"] == {"commit": head, "changed_in_work_tree": 2}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_repo_without_a_commit_reads_its_index(tmp_path, ctx):
    root = tmp_path / "fresh"
    _write(root, {"staged.py": "S = 1\n", "loose.py": "L = 2\n"})
    _git(root, "init", "-q")
    _git(root, "add", "staged.py")
    doc = extract_codebase(root, ctx)
    assert doc.meta["source"] == "git"
    assert _files(doc) == {"staged.py"}


# -- archives -----------------------------------------------------------------
def _zip_with_attacks(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("proj/main.py", "def main():\n    return 'ok'\n")
        zf.writestr("proj/.gitignore", "*.tmp\n")
        zf.writestr("proj/junk.tmp", "ignored\n")
        zf.writestr("proj/.quireignore", "notes/\n")
        zf.writestr("proj/notes/todo.md", "ignored by the nested .quireignore\n")
        zf.writestr("../evil.py", "EVIL = True\n")
        zf.writestr("/abs.py", "ABS = True\n")
        link = zipfile.ZipInfo("proj/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../../etc/passwd")
        zf.writestr("proj/bomb.py", "0" * 900_000)  # compresses about 1000:1


def test_zip_refuses_traversal_links_and_bombs(tmp_path, ctx):
    archive = tmp_path / "work" / "code.zip"
    archive.parent.mkdir()
    _zip_with_attacks(archive)
    before = set(tmp_path.rglob("*"))
    doc = extract_archive(archive, ctx)
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere
    assert _files(doc) == {"proj/main.py", "proj/.gitignore", "proj/.quireignore"}
    assert doc.meta["ignored"] == 2 and doc.meta["source"] == "zip"
    reasons = {s["path"]: s["reason"] for s in doc.meta["skipped"]}
    assert "unsafe path" in reasons["../evil.py"] and "unsafe path" in reasons["/abs.py"]
    assert "link" in reasons["proj/passwd"]
    assert "zip bomb" in reasons["proj/bomb.py"]
    assert not any("EVIL" in s.text or "ABS = " in s.text for s in doc.segments)
    assert registry.find(Path("code.zip")) is extract_archive


def _tar_member(tf: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in kw.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if data else None)


def test_tar_gz_refuses_traversal_and_links(tmp_path, ctx):
    archive = tmp_path / "code.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _tar_member(tf, "proj/app.py", b"import sys\nprint(sys.argv)\n")
        _tar_member(tf, "proj/sub/util.py", b"def util():\n    pass\n")
        _tar_member(tf, "proj/../../evil.py", b"EVIL = 1\n")
        _tar_member(tf, "/etc/cron.d/x", b"* * * * * root rm -rf /\n")
        _tar_member(tf, "proj/link", type=tarfile.SYMTYPE, linkname="../../../etc/passwd")
        _tar_member(tf, "proj/inner", type=tarfile.SYMTYPE, linkname="app.py")
        _tar_member(tf, "proj/hard", type=tarfile.LNKTYPE, linkname="/etc/shadow")
        _tar_member(tf, "proj/fifo", type=tarfile.FIFOTYPE)
    doc = extract_codebase(archive, ctx)
    assert doc.meta["source"] == "tar"
    assert _files(doc) == {"proj/app.py", "proj/sub/util.py"}
    reasons = {s["path"]: s["reason"] for s in doc.meta["skipped"]}
    assert "unsafe path" in reasons["proj/../../evil.py"] and "unsafe path" in reasons["/etc/cron.d/x"]
    assert "outside" in reasons["proj/link"] and reasons["proj/inner"] == "link (not followed)"
    assert "outside" in reasons["proj/hard"] and reasons["proj/fifo"] == "special file"
    seg = _segment_at(doc, "proj/sub/util.py", 1)
    assert _line_text(seg, 1) == "def util():"


def test_archive_totals_refused_as_bombs(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"f{i}.txt", "a" * 300_000)
    with pytest.raises(TooLarge, match="many.zip"):
        with ArchiveReader(archive, "many.zip", ArchiveLimits(max_total_bytes=1_000_000)) as reader:
            reader.list()
    with pytest.raises(TooLarge, match="members"):
        with ArchiveReader(archive, "many.zip", ArchiveLimits(max_members=3)) as reader:
            reader.list()
    tgz = tmp_path / "zeros.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for i in range(4):
            _tar_member(tf, f"z{i}.txt", bytes(400_000))
    limits = ArchiveLimits(max_ratio=50, ratio_total_floor=100_000)
    with pytest.raises(TooLarge, match="times its size"):
        with ArchiveReader(tgz, "zeros.tar.gz", limits) as reader:
            reader.list()


def test_corrupt_archive(tmp_path, ctx):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip file at all")
    with pytest.raises(CorruptFile, match="broken.zip"):
        extract_archive(bad, ctx)


def test_safe_member_path():
    assert safe_member_path("./a//b/c.py") == "a/b/c.py"
    assert safe_member_path("a\\..\\..\\x") is None
    assert safe_member_path("C:/windows/x") is None
    assert safe_member_path("/x") is None
    assert safe_member_path("a/../b") is None


# -- chunks and single files ----------------------------------------------------
def test_numbered_chunks_cover_lines_and_cut_long_lines():
    text = "\n".join(f"line {i}" for i in range(1, 151)) + "\n"
    chunks = numbered_chunks(text)
    assert [(a, b) for a, b, _ in chunks] == [(1, 60), (61, 120), (121, 150)]
    assert chunks[1][2].split("\n")[0] == "61\tline 61"
    wide = numbered_chunks("short\n" + "y" * 20_000 + "\nend\n")
    assert wide[0][:2] == (1, 1) and wide[-1][:2] == (3, 3)
    assert all(a == b == 2 for a, b, _ in wide[1:-1]) and len(wide) >= 3
    assert sum(len(body) for a, _, body in wide if a == 2) >= 20_000


def test_single_source_file(tmp_path, ctx):
    src = tmp_path / "tool.rs"
    src.write_text("fn main() {\n    println!(\"hi\");\n}\n")
    assert registry.find(src) is extract_source_file
    doc = extract_source_file(src, ctx)
    assert doc.kind == "code" and doc.meta["languages"] == {"rust": 1}
    seg = doc.segments[0]
    assert seg.locator.label() == "tool.rs:1-3" and _line_text(seg, 2) == '    println!("hi");'
    empty = tmp_path / "empty.py"
    empty.write_text("  \n")
    with pytest.raises(EmptyFile):
        extract_source_file(empty, ctx)


def test_archive_of_real_package_matches_folder(tmp_path, ctx):
    import email

    root = Path(email.__file__).parent
    archive = tmp_path / "email.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname=".", filter=lambda ti: None if "__pycache__" in ti.name else ti)
    from_folder = extract_codebase(root, ctx)
    from_tar = extract_codebase(archive, ctx)
    assert [s.text for s in from_tar.segments[1:]] == [s.text for s in from_folder.segments[1:]]
    assert from_tar.meta["files"] == from_folder.meta["files"] and from_tar.meta["skipped"] == []

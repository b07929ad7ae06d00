"""The command line end to end, in real subprocesses, on a real data directory."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(home, *args, check=True, **env_vars):
    env = {**os.environ, "QUIRE_HOME": str(home), **env_vars}
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_ingest_ask_export_sessions(quire_home, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Site visit\n\nThe inspector arrived at 9am.\n\nThe boiler serial number is QX-4471.\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = run(quire_home, "ingest", str(notes), str(empty), str(tmp_path / "missing.pdf"), "--session", "site",
              check=False)
    assert out.returncode == 3 and "2 of 3 files could not be read." in out.stderr  # some read, some not
    assert "added" in out.stdout and "notes.md" in out.stdout
    assert "empty.txt" in out.stderr and "empty" in out.stderr  # named, with what happened
    assert "missing.pdf" in out.stderr

    again = run(quire_home, "ingest", str(notes), "--session", "site")
    assert "duplicate notes.md: already in the session" in again.stdout

    ans = run(quire_home, "ask", "--session", "site", "--context-window", "2048", "--max-answer-tokens", "48",
              "What is the boiler serial number?")
    assert "QX-4471" in ans.stdout
    assert "Citations:" in ans.stdout and "notes.md" in ans.stdout
    assert "first token" in ans.stderr

    report = tmp_path / "site.md"
    exp = run(quire_home, "export", "--session", "site", "--format", "md", "--out", str(report))
    assert str(report) in exp.stdout
    assert "What is the boiler serial number?" in report.read_text()

    listing = run(quire_home, "sessions")
    assert listing.stdout.startswith("site\t1 documents")
    docs = run(quire_home, "documents", "--session", "site")
    assert "notes.md" in docs.stdout and "8192-token window" in docs.stdout


def test_errors_are_one_line_messages(quire_home):
    proc = run(quire_home, "ask", "--session", "nope", "hello?", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: No session named 'nope'")
    assert "Traceback" not in proc.stderr
    proc = run(quire_home, "export", "--session", "nope", "--out", "x.md", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_partly_failed_batch_has_its_own_exit_status_and_shows_warnings(quire_home, tmp_path):
    from tests import hostile

    good = tmp_path / "good.txt"
    good.write_text("The boiler serial number is QX-4471.\n")
    bad = hostile.bad_resource_page(tmp_path / "bad-resource.pdf")
    bomb = hostile.bomb_page(tmp_path / "bomb_giant.pdf", mib=16)
    some = run(quire_home, "ingest", str(good), str(bad), str(bomb), "--session", "s", "--workers", "1", check=False)
    assert some.returncode == 3, some.stderr
    assert "1 of 3 files could not be read." in some.stderr
    assert "error     bomb_giant.pdf: is not readable" in some.stderr and "bomb_giant" not in some.stdout
    assert "added     bad-resource.pdf  2 pages" in some.stdout
    assert "  warning bad-resource.pdf: page 2 could not be read (TypeError" in some.stdout
    none = run(quire_home, "ingest", str(bomb), str(tmp_path / "missing.pdf"), "--session", "s", check=False)
    assert none.returncode == 1 and "2 of 2 files could not be read." in none.stderr
    docs = run(quire_home, "documents", "--session", "s")
    assert "bad-resource.pdf" in docs.stdout and "\twarning: page 2 could not be read" in docs.stdout
    assert "bomb_giant.pdf" not in docs.stdout


def test_nothing_is_written_outside_the_data_directory(quire_home, tmp_path, corpus):
    """onnxruntime (behind PyMuPDF's layout module and RapidOCR) writes telemetry under ~/.cache unless told not to."""
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    scan, paper = corpus / "pdfs/ocrmypdf/c02-22.pdf", corpus / "pdfs/pdfjs/tracemonkey.pdf"
    out = run(quire_home, "ingest", str(scan), str(paper), "--session", "s", HOME=str(user_home))
    assert out.stdout.count("added") == 2
    run(quire_home, "documents", "--session", "s", HOME=str(user_home))
    run(quire_home, "export", "--session", "s", "--format", "pdf", "--out", str(quire_home / "r.pdf"), HOME=str(user_home))
    assert [str(p.relative_to(user_home)) for p in user_home.rglob("*")] == []


def test_control_characters_in_file_names_reach_the_terminal_escaped(quire_home, tmp_path):
    good = tmp_path / "minutes\r\x1b[2Kerror: disk full.txt"  # printed raw, it erases its line and fakes an error
    good.write_text("The meeting ended at noon.\n")
    bad = tmp_path / "scan\x1b]0;owned\x07.pdf"  # a terminal title change, in a file that is no PDF
    bad.write_bytes(b"not a pdf")
    out = run(quire_home, "ingest", str(good), str(bad), "--session", "s", "--workers", "1", check=False)
    assert out.returncode == 3
    for stream in (out.stdout, out.stderr):
        assert "\x1b[2K" not in stream and "\x1b]0" not in stream and "\x07" not in stream
        assert "\r\x1b" not in stream
    assert "added     minutes\\r\\x1b[2Kerror: disk full.txt  1 segments" in out.stdout
    assert "error     scan\\x1b]0;owned\\x07.pdf: " in out.stderr
    docs = run(quire_home, "documents", "--session", "s")
    assert "minutes\\r\\x1b[2Kerror: disk full.txt" in docs.stdout and "\x1b" not in docs.stdout

"""The command line: ``python app.py [serve|ingest|ask|matrix|warm|export|sessions|users|tokens|share|mcp] ...``.

Every Settings field is a flag on every subcommand; QuireError becomes a
one-line message and exit status 2 here, and nowhere else.

Exit statuses: 0 done; 1 ``ingest`` could read none of the files; 2 an error
(bad flag, unknown session, the model failed); 3 ``ingest`` read some files
but not all (the count is printed).
"""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import threading
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

from core.errors import QuireError, printable
from core.settings import Settings
from evals import cli as eval_cli
from export import FORMATS, export_session
from quire.api import Answer, CellDone, Delta, MatrixRun, Quire, Status, parse_fields, runtime_choices

EXIT_NONE_READ = 1  # ingest: not one file could be read
EXIT_ERROR = 2
EXIT_SOME_FAILED = 3  # ingest: some files could not be read, the rest were


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    Settings.add_arguments(common, choices={"runtime": runtime_choices()})
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Quire: ask questions across whole documents, PDFs, screenshots and codebases, on your own hardware.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("serve", parents=[common], help="Start the web UI (the default).")

    p = sub.add_parser("ingest", parents=[common], help="Add files, folders or archives to a session.")
    p.add_argument("paths", nargs="+", type=Path, help="Files, folders, .zip or .tar.gz archives.")
    p.add_argument("--session", required=True, help="Session name (created if missing).")
    p.add_argument("--password", action="append", default=[], metavar="[FILE=]PASSWORD",
                   help="Password for encrypted PDFs: one for all, or FILE=PASSWORD per file (repeatable).")

    p = sub.add_parser("ask", parents=[common], help="Ask a question; the answer streams, then its citations.")
    p.add_argument("question", help="The question.")
    p.add_argument("--session", required=True, help="Session name.")
    p.add_argument("--json", action="store_true", help="Print the stored turn as JSON after the answer.")

    p = sub.add_parser("export", parents=[common], help="Write a report of a session's questions and answers.")
    p.add_argument("--session", required=True, help="Session name.")
    p.add_argument("--format", choices=tuple(FORMATS), default="md", help="Report format.")
    p.add_argument("--out", type=Path, required=True, help="Report file to write.")

    p = sub.add_parser("matrix", parents=[common],
                       help="Fill the review matrix: one row per document, one column per field, each cell quoted and checked.")
    p.add_argument("--session", required=True, help="Session name.")
    p.add_argument("--fields", default="", help="Fields, separated by ';' (free text, or CUAD category names).")
    p.add_argument("--categories", default="",
                   help="CUAD clause categories, comma-separated (e.g. 'Governing Law,Cap on Liability'), or 'all'.")
    p.add_argument("--rerun", action="store_true", help="Compute every cell again, even those already stored.")

    p = sub.add_parser("warm", parents=[common],
                       help="Prepare a session's shards now (their KV states), so the first sweep or matrix run loads them.")
    p.add_argument("--session", required=True, help="Session name.")

    sub.add_parser("sessions", parents=[common], help="List sessions with their documents and token counts.")
    p = sub.add_parser("documents", parents=[common], help="List a session's documents with token counts against the window.")
    p.add_argument("--session", required=True, help="Session name.")
    p.add_argument("--exact", action="store_true", help="Count with the runtime's own tokenizer (loads the model).")

    eval_cli.add_parser(sub, common)
    _account_parsers(sub, common)
    sub.add_parser("mcp", parents=[common], help="Serve the MCP tools on stdin/stdout, acting as --user.")
    return parser


def _account_parsers(sub, common) -> None:
    users = sub.add_parser("users", parents=[common], help="Manage the accounts of a team server.")
    verbs = users.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("add", parents=[common], help="Add a user (asks for the password, or --password-file).")
    p.add_argument("name", help="User name.")
    p.add_argument("--admin", action="store_true", help="Admins manage users and see every session.")
    p.add_argument("--password-file", type=Path, help="Read the password from the first line of this file.")
    p.add_argument("--no-password", action="store_true", help="No password: a user for --auth-header or tokens only.")
    verbs.add_parser("list", parents=[common], help="List users.")
    p = verbs.add_parser("remove", parents=[common], help="Remove a user with their sessions and tokens.")
    p.add_argument("name", help="User name.")
    p = verbs.add_parser("passwd", parents=[common], help="Set a user's password.")
    p.add_argument("name", help="User name.")
    p.add_argument("--password-file", type=Path, help="Read the password from the first line of this file.")

    tokens = sub.add_parser("tokens", parents=[common], help="Personal API tokens (Authorization: Bearer ...).")
    verbs = tokens.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("create", parents=[common], help="Create a token for a user; it is printed once, last.")
    p.add_argument("name", help="The user the token acts for.")
    p.add_argument("--label", default="", help="What the token is for (shown in the list).")
    p = verbs.add_parser("list", parents=[common], help="List tokens (never the tokens themselves).")
    p.add_argument("name", nargs="?", help="Only this user's.")
    p = verbs.add_parser("revoke", parents=[common], help="Revoke a token by its id; it stops working at once.")
    p.add_argument("id", type=int, help="Token id (from `tokens list`).")

    p = sub.add_parser("share", parents=[common], help="Share a session with a user as reader or editor.")
    p.add_argument("session", help="Session name (OWNER/NAME for another user's).")
    p.add_argument("name", help="The user to share it with.")
    p.add_argument("--role", choices=("reader", "editor"), default="reader",
                   help="reader: ask, read, export; editor: also upload, remove documents, rename.")
    p.add_argument("--remove", action="store_true", help="Take the share away instead.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_args(args)
        command = args.command or "serve"
        if command in ("serve", "mcp"):  # servers: their own shutdown
            return COMMANDS[command](settings, args)
        with _term_interrupts():
            return COMMANDS[command](settings, args)
    except QuireError as exc:
        print(f"error: {printable(exc.user_message())}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:  # settings validation names the flag
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _interrupt(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    raise KeyboardInterrupt


@contextmanager
def _term_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, a job runner's timeout) stops a command as Ctrl-C does, so what is done is kept and the
    model's process is shut down (a shell's background job ignores SIGINT, so Ctrl-C is not the only way)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def cmd_serve(settings: Settings, args) -> int:
    from server.app import serve  # Gradio takes seconds to import: only the command that serves it pays

    serve(settings)
    return 0


def _passwords(values: list[str]) -> dict[str, str] | str | None:
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    mapping: dict[str, str] = {}
    for value in values:
        name, sep, pw = value.partition("=")
        if not sep:
            raise QuireError(f"--password {value!r} must be FILE=PASSWORD when several are given.")
        mapping[Path(name).name] = pw
        mapping[name] = pw
    return mapping


def cmd_ingest(settings: Settings, args) -> int:
    def progress(event) -> None:
        name = printable(event.name)  # a file name may hold "\r\x1b[2K": never let the terminal obey it
        if event.stage == "page" and event.total:
            print(f"\r  {name}: page {event.done}/{event.total}", end="", file=sys.stderr, flush=True)
        elif event.stage == "source" and event.total:
            print(f"\r  {name}: file {event.done:,}/{event.total:,} {printable(event.message)}\033[K", end="",
                  file=sys.stderr, flush=True)
        elif event.stage == "file":
            print(f"[{event.done + 1}/{event.total}] {name}", file=sys.stderr, flush=True)
        elif event.stage in ("done", "error"):
            print(f"\r[{event.done}/{event.total} files, {event.pages:,} pages, ~{event.tokens:,} tokens] "
                  f"{name}\033[K", end="", file=sys.stderr, flush=True)

    with Quire(settings) as q:
        results = q.ingest(args.session, args.paths, passwords=_passwords(args.password), progress=progress)
        print(file=sys.stderr)
        if settings.warm_shards != "off" and any(r.ok for r in results):  # the process ends here: warm before
            _report_warming(q.warm(args.session, wait=True, progress=_warming_progress))
    failed = 0
    for r in results:
        name = printable(r.name)
        size = f"{r.pages or ''}{' pages, ' if r.pages else ''}{r.segments} segments, ~{r.tokens} tokens"
        if r.status == "added":
            print(f"{r.status:9} {name}  {size}")
        elif r.status == "duplicate":
            print(f"{r.status:9} {name}: {r.message} ({size})")
        else:
            failed += 1
            print(f"{r.status:9} {printable(r.message)}", file=sys.stderr)
        for warning in r.warnings:
            print(f"{'warning':>9} {name}: {printable(warning)}")
    if not failed:
        return 0
    print(f"{failed} of {len(results)} files could not be read.", file=sys.stderr)
    return EXIT_NONE_READ if failed == len(results) else EXIT_SOME_FAILED


def cmd_ask(settings: Settings, args) -> int:
    with Quire(settings) as q, closing(q.ask(args.session, args.question)) as events:
        answer = None
        for event in events:
            if isinstance(event, Delta):  # the model may copy control characters out of a document
                print(printable(event.text, lines=True), end="", flush=True)
            elif isinstance(event, Status):
                print(f"[{printable(event.message)}]", file=sys.stderr, flush=True)
            elif isinstance(event, Answer):
                answer = event
    print()
    turn = answer.turn
    if turn.warning:
        print(f"\nWARNING: {turn.warning}")
    if turn.citations:
        print("\nCitations:")
        for c in turn.citations:
            where = c.locator.label()
            print(f"  [{c.ref}] {printable(c.document_name)} {printable(where)} ({c.status_words})"
                  + (f': "{printable(c.quote[:160])}"' if c.quote else ""))
    m = turn.meta
    print(
        f"\n{turn.strategy}: saw {m.get('segments_used')}/{m.get('segments_total')} passages "
        f"({m.get('share_seen', 0):.0%} of the corpus); {turn.prompt_tokens} prompt tokens "
        f"({turn.cached_tokens} cached), first token {turn.ttft_s:.2f} s, total {turn.total_s:.2f} s",
        file=sys.stderr,
    )
    for note in m.get("notes", []):
        print(f"note: {printable(str(note))}", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(turn), default=str, indent=2))
    return 0


def cmd_matrix(settings: Settings, args) -> int:
    fields = parse_fields(args.fields, args.categories)
    print(f"{len(fields)} field{'s' if len(fields) != 1 else ''}: " + "; ".join(printable(f.name) for f in fields),
          file=sys.stderr, flush=True)
    stored = 0
    with Quire(settings) as q, closing(q.matrix(args.session, fields, rerun=args.rerun)) as events:
        try:
            for event in events:
                _print_matrix_event(event)
                stored += isinstance(event, CellDone) and not event.reused
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the stored cells stay, and so do the row's replies so far
            print(f"\nstopped: {stored} cells stored in this run; run it again to resume", file=sys.stderr)
            raise
    return 0


def _print_matrix_event(event) -> None:
    """A finished cell as a line on stdout; progress and the run's end on stderr."""
    if isinstance(event, CellDone):
        c = event.cell
        where = c.locator.label() if c.segment_id else ""
        print(f"{printable(c.document_name)}\t{printable(c.field_name)}\t{c.status_words}"
              + (" (kept from an earlier run)" if event.reused else "")
              + (f"\t{printable(c.shown_answer[:200])}" if c.shown_answer else "")
              + (f'\t{printable(where)}: "{printable(c.quote[:200])}"' if c.quote else ""), flush=True)
    elif isinstance(event, Status):
        print(f"[{event.done}/{event.total} cells] {printable(event.message)}", file=sys.stderr, flush=True)
    elif isinstance(event, MatrixRun):
        print(f"{event.done} of {event.total} cells ({event.reused} kept from an earlier run) in "
              f"{event.wall_s:.1f} s" + ("; stopped: run it again to resume" if event.stopped else ""),
              file=sys.stderr)


def _warming_progress(w) -> None:
    print(f"\r[{w.done}/{w.total} shards prepared] {w.state}\033[K", end="", file=sys.stderr, flush=True)


def _report_warming(w) -> None:
    print(file=sys.stderr)
    print(f"warming {w.state}: {w.done} of {w.total} shards kept ({w.computed} prepared now) in {w.seconds:.1f} s"
          + (f"; {printable(w.message)}" if w.state in ("off", "failed") else ""), file=sys.stderr)


def cmd_warm(settings: Settings, args) -> int:
    with Quire(settings) as q:
        w = q.warm(args.session, wait=True, force=True, progress=_warming_progress)
        _report_warming(w)
    return 0 if w.state == "done" else 1


def cmd_export(settings: Settings, args) -> int:
    with Quire(settings) as q:
        for path in export_session(q, args.session, args.format, args.out):
            print(printable(str(path)))
    return 0


def cmd_sessions(settings: Settings, args) -> int:
    with Quire(settings) as q:
        rows = q.sessions()
    if not rows:
        print("No sessions yet. Create one with `python app.py ingest FILE --session NAME`.")
    for s in rows:
        name = s.qualified + ("" if s.role == "owner" else f" ({s.role})")
        print(f"{printable(name)}\t{s.documents} documents\t~{s.tokens} tokens\t{s.turns} questions")
    return 0


def cmd_documents(settings: Settings, args) -> int:
    with Quire(settings) as q:
        budget = q.budget(args.session, exact=args.exact)
        docs = q.documents(args.session)
    approx = "" if args.exact else "~"
    for d, (_, tokens) in zip(docs, budget.documents):
        layers = {p.get("text_layer") for p in d.meta.get("pages", []) if isinstance(p, dict)} - {None}
        extra = f"\t{d.pages} pages ({'/'.join(sorted(layers))})" if d.pages else ""
        print(f"{d.id}\t{d.kind}\t{printable(d.name)}{extra}\t{approx}{tokens} tokens"
              + (f"\t⚠ {len(d.warnings)}" if d.warnings else ""))
        for warning in d.warnings:
            print(f"\twarning: {printable(warning)}")
    print(f"total {approx}{budget.total} tokens of a {budget.window}-token window "
          f"({budget.answer_reserve} kept for the answer): {'fits' if budget.fits else 'too big: focus will narrow it'}")
    return 0


def _read_password(args) -> str:
    if getattr(args, "password_file", None):
        return args.password_file.read_text(encoding="utf-8").splitlines()[0] if args.password_file.stat().st_size else ""
    if not sys.stdin.isatty():  # piped in
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise QuireError("The two passwords differ.", hint="Type the same password twice.")
    return first


def cmd_users(settings: Settings, args) -> int:
    with Quire(settings) as q:
        if args.verb == "add":
            user = q.add_user(args.name, password=None if args.no_password else _read_password(args),
                              admin=args.admin)
            print(f"added {printable(user.name)}" + (" (admin)" if user.is_admin else ""))
        elif args.verb == "list":
            for user in q.users():
                flags = [f for f, on in (("admin", user.is_admin), ("password", user.has_password)) if on]
                print(f"{printable(user.name)}\t{', '.join(flags) or '-'}\t{user.created_at}")
        elif args.verb == "remove":
            q.remove_user(args.name)
            print(f"removed {printable(args.name)}")
        elif args.verb == "passwd":
            q.set_password(args.name, _read_password(args))
            print(f"password of {printable(args.name)} changed")
    return 0


def cmd_tokens(settings: Settings, args) -> int:
    with Quire(settings) as q:
        if args.verb == "create":
            record, token = q.create_token(args.label or "token", user=args.name)
            print(f"token {record.id} for {printable(args.name)}; it is shown once, keep it now:")
            print(token)  # the last line, on its own: scripts take it with `tail -1`
        elif args.verb == "list":
            users = {u.id: u.name for u in q.users()}
            for t in q.tokens(user=args.name):
                state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
                print(f"{t.id}\t{printable(users.get(t.user_id, '?'))}\t{printable(t.name)}\t{t.prefix}...\t"
                      f"{t.created_at}\t{state}")
        elif args.verb == "revoke":
            q.revoke_token(args.id)
            print(f"token {args.id} revoked")
    return 0


def cmd_share(settings: Settings, args) -> int:
    with Quire(settings) as q:
        if args.remove:
            q.unshare(args.session, args.name)
            print(f"{printable(args.session)} is no longer shared with {printable(args.name)}")
        else:
            share = q.share(args.session, args.name, args.role)
            print(f"{printable(args.session)} shared with {printable(share.user_name)} as {share.role}")
    return 0


def cmd_mcp(settings: Settings, args) -> int:
    from server.mcp import serve_stdio  # the MCP SDK loads only for this command

    serve_stdio(settings)
    return 0


def cmd_eval(settings: Settings, args) -> int:
    return eval_cli.run(settings, args)


COMMANDS = {
    "eval": cmd_eval,
    "serve": cmd_serve,
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "export": cmd_export,
    "matrix": cmd_matrix,
    "warm": cmd_warm,
    "sessions": cmd_sessions,
    "documents": cmd_documents,
    "users": cmd_users,
    "tokens": cmd_tokens,
    "share": cmd_share,
    "mcp": cmd_mcp,
}

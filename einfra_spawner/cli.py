"""The ``einfra-spawner`` command: check profile folders and show what a request would submit.

``validate`` exits 0 when every path is valid, else 1 with one line per problem; warnings (what is
valid but probably not meant) are printed too and do not change the exit status. ``render`` prints
the manifests for one request (exit 1: broken profiles; exit 2: the request was refused).
``schema`` prints the JSON Schema of profile files. ``usage`` prints per-user totals from a
usage ledger (exit 1: the database cannot be read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from .errors import OptionsError, ProfileError
from .profiles import check_paths, load_profiles
from .render import ServerIdentity, SingleUser, render_manifests
from .resolve import UserContext, resolve_options
from .schema import profile_schema_json

__all__ = ["main"]


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a form would send them: a key given twice becomes a list."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--option {pair!r}: expected KEY=VALUE")
        if key in options:
            previous = options[key]
            options[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            options[key] = value
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="einfra-spawner", description="JupyterHub on demand: profile tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check instance folders or profile files")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    render = commands.add_parser("render", help="print the manifests one request would submit")
    render.add_argument("--profiles", required=True, metavar="DIR", help="an instance folder")
    render.add_argument("--user", required=True, metavar="NAME")
    render.add_argument("--server", default="", metavar="NAME", help="a named server")
    render.add_argument("--group", action="append", default=[], metavar="G")
    render.add_argument("--admin", action="store_true")
    render.add_argument("--namespace", default="default")
    render.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a request key")
    render.add_argument("--format", choices=("yaml", "json"), default="yaml")
    commands.add_parser("schema", help="print the JSON Schema of profile files")
    report = commands.add_parser("usage", help="print per-user usage and cost from a usage ledger")
    report.add_argument("--db", required=True, metavar="URL", help="the ledger's SQLAlchemy URL")
    report.add_argument("--days", type=int, default=90, metavar="N", help="the window (default 90)")
    report.add_argument("--user", action="append", default=[], metavar="NAME", help="only these users")
    report.add_argument(
        "--group", action="append", default=[], metavar="G", help="only runs of members of G (at their start)"
    )
    report.add_argument("--instance", default=None, metavar="NAME", help="only this hub instance")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return parser


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL at all: let the open below say so
        return False
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    return parsed.get_backend_name() == "sqlite" and not in_memory and not os.path.exists(database)


def _usage(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Imported here: SQLAlchemy is needed by this command only.
    from .usage import Ledger, window
    from .usage.report import format_rows, usage_rows

    if args.days < 1:
        print("einfra-spawner: --days must be at least 1", file=err)
        return 2
    if _missing_sqlite_file(args.db):  # a report must not create an empty database by mistake
        print(f"einfra-spawner: no usage database at {args.db!r}", file=err)
        return 1
    try:
        ledger = Ledger(args.db)
    except Exception as exc:  # any driver's error: say which database, not a traceback
        print(f"einfra-spawner: cannot open the usage database {args.db!r}: {exc}", file=err)
        return 1
    try:
        start, end = window(time.time(), args.days)
        intervals = ledger.intervals(start, end, args.instance, args.user)
    finally:
        ledger.dispose()
    out.write(format_rows(usage_rows(intervals, start, end, groups=args.group), args.format))
    return 0


def _render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        request = _options(args.option)
    except argparse.ArgumentTypeError as exc:
        print(f"einfra-spawner: {exc}", file=err)
        return 2
    try:
        profiles = load_profiles(args.profiles)
    except ProfileError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return 1
    user = UserContext(name=args.user, groups=frozenset(args.group), admin=args.admin)
    try:
        options = resolve_options(profiles, user, request)
    except OptionsError as exc:
        print(f"einfra-spawner: refused: {exc}", file=err)
        return 2
    identity = ServerIdentity(user=args.user, server=args.server, namespace=args.namespace)
    single_user = SingleUser(env=(("JUPYTERHUB_USER", args.user), ("JUPYTERHUB_SERVER_NAME", args.server)))
    objects = render_manifests(options, identity, single_user).objects()
    if args.format == "json":
        out.write(json.dumps(objects, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True))
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (never calls ``sys.exit`` itself)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "validate":
        problems, warnings = check_paths(args.paths)
        for problem in problems:
            print(problem, file=err)
        for warning in warnings:
            print(f"warning: {warning}", file=err)
        if not problems:
            print(f"valid: {', '.join(args.paths)}", file=out)
        return 1 if problems else 0
    if args.command == "render":
        return _render(args, out, err)
    if args.command == "usage":
        return _usage(args, out, err)
    out.write(profile_schema_json())
    return 0

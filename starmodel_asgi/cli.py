"""The command line: ``python -m starmodel_asgi`` (or ``starmodel``) ``routes``, ``openapi`` and
``copy``, each given the app as ``module:attribute`` (as uvicorn takes it)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from starmodel_asgi.app import StarModel
from starmodel_asgi.copying import Copied
from starmodel_asgi.errors import EventError
from starmodel_asgi.openapi import openapi_json
from starmodel_asgi.routing import MethodHandler, Route

DESCRIPTION = "StarModel's command line: look at an app's routes and OpenAPI document, copy its data."
APP_HELP = "the StarModel app, as module:attribute (e.g. myproject.main:sm), imported from the current directory"


class AppNotFound(Exception):
    """``module:attribute`` that does not name a StarModel app; the message says why."""


def load_app(target: str) -> StarModel:
    """The ``StarModel`` that ``module:attribute`` names (``attribute`` may be dotted)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise AppNotFound(f"{target!r}: give the app as module:attribute, e.g. myproject.main:sm")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the project's modules import
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the module exists; something it imports does not
        raise AppNotFound(f"no module {module_name!r} (run this from your project's directory)") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise AppNotFound(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, StarModel):
        what = f"the class {found.__name__}" if isinstance(found, type) else f"a {type(found).__name__}"
        raise AppNotFound(f"{target} is {what}, not a StarModel: name the StarModel(...) itself")
    return found


def routes(sm: StarModel, out: TextIO) -> None:
    """The route table: method, path (under ``base_path``), entity and what answers."""
    rows = [("METHOD", "PATH", "ENTITY", "ANSWERS")]
    for route in sm.route_table:
        for method, handler in route.handlers.items():
            rows.append((method, sm.base_path + route.template.path, route.spec.name, _answers(route, method, handler)))
    rows.append(("GET", f"{sm.base_path}/openapi.json", "", "the OpenAPI document"))
    if "health" not in sm.specs:  # an entity named health takes the path
        rows.append(("GET", f"{sm.base_path}/health", "", "the stores' and broadcast's health"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + f"  {row[3]}\n")


def _answers(route: Route, method: str, handler: MethodHandler) -> str:
    path, spec = route.template.path, route.spec
    if method == "DELETE":
        return "delete the record"
    if handler.event is not None:
        return f"event {handler.event}"
    if handler.checks_new_record:
        return "create a record"
    if path.endswith("/live"):
        return "live list" if spec.is_record and path == f"/{spec.name}/live" else "live stream"
    return "list the records" if spec.is_record and path == f"/{spec.name}" else "the state"


class Progress:
    """Running counts on one stderr line, only when stderr is a terminal."""

    def __init__(self, err: TextIO) -> None:
        self.err, self.shown = err, err.isatty()

    def __call__(self, entity: str, done: int) -> None:
        if self.shown:
            self.err.write(f"\r\x1b[Kcopying {entity}: {done} read")
            self.err.flush()

    def end(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.err.flush()


def report(counts: dict[str, Copied], dry_run: bool, out: TextIO) -> None:
    rows = [("ENTITY", "FOUND", "WOULD COPY" if dry_run else "COPIED", "ALREADY THERE")]
    if dry_run:
        rows += [(c.entity, str(c.found), str(c.found), "?") for c in counts.values()]
    else:
        rows += [(c.entity, str(c.found), str(c.written), str(c.present)) for c in counts.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


async def copy(sm: StarModel, to: str, entities: Sequence[str] | None, dry_run: bool) -> None:
    progress = Progress(sys.stderr)
    try:
        counts = await sm.copy(to=to, entities=entities, dry_run=dry_run, progress=progress)
    finally:
        progress.end()
        await sm.aclose()
    report(counts, dry_run, sys.stdout)
    if dry_run:
        sys.stdout.write("dry run: nothing was written\n")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="starmodel", description=DESCRIPTION)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shown = commands.add_parser("routes", help="print the app's route table", description="Print the route table.")
    shown.add_argument("app", help=APP_HELP)
    document = commands.add_parser(
        "openapi", help="print the app's OpenAPI document (JSON)", description="Print /openapi.json on stdout."
    )
    document.add_argument("app", help=APP_HELP)
    copying = commands.add_parser(
        "copy",
        help="copy every instance of the app's entities into another store",
        description=(
            "Copy every instance (records, global, user and session states) of the app's entities from the "
            "stores it is configured with into the store at --to, keeping keys, remaining TTLs and creation "
            "order. Instances the target already has are left as they are: running it twice copies nothing "
            "more. A memory store lives in its process: copy from it with await sm.copy(...) in that process."
        ),
    )
    copying.add_argument("app", help=APP_HELP)
    copying.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="sqlite+aiosqlite:///FILE, postgresql+asyncpg://USER@HOST/DB or redis://HOST:PORT/N",
    )
    copying.add_argument(
        "--entity", action="append", metavar="NAME", help="copy only this entity (by name); repeat for several"
    )
    copying.add_argument("--dry-run", action="store_true", help="count what would be copied; write nothing")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    try:
        sm = load_app(args.app)
        if args.command == "routes":
            routes(sm, sys.stdout)
        elif args.command == "openapi":
            sys.stdout.write(openapi_json(sm.specs.values()).decode() + "\n")
        else:
            asyncio.run(copy(sm, args.to, args.entity, args.dry_run))
    except (AppNotFound, ValueError, LookupError) as exc:
        top.exit(2, f"starmodel {args.command}: {exc}\n")
    except EventError as exc:  # a store refused (unreachable, a table to migrate): its message says why
        top.exit(1, f"starmodel {args.command}: {exc.message}\n")
    return 0

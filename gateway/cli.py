"""`python -m gateway [serve|migrate|users create|run-job|rotate-keys]`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from gateway import keys
from gateway.logs import redact
from gateway.settings import ConfigError, Settings

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (the default)")
    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument(
        "--to",
        metavar="REVISION",
        help="migrate up or down to this revision (e.g. an older one to roll back; 'base' "
        "removes everything the gateway added)",
    )
    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="give the user role 'admin'")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    job = sub.add_parser("run-job", help="run a scheduled job once, now")
    job.add_argument("name")
    sub.add_parser("rotate-keys", help="re-encrypt every stored secret with the primary key")
    return parser


def _run(command: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(_settled(command))


async def _settled(command: Coroutine[Any, Any, int]) -> int:
    try:
        return await command
    finally:
        # aiosqlite does not wait for its worker thread after a failed connect; if the loop
        # closes first, the thread reports to a closed loop (a traceback on stderr).
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name:
                await asyncio.to_thread(thread.join, 2)


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.logs import configure_logging

    configure_logging()
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if command == "serve":
            return serve(settings)
        if command == "migrate":
            return _run(_migrate(settings, args.to))
        if command == "users":
            return _run(_users_create(settings, args))
        if command == "run-job":
            return _run(_run_job(settings, args.name))
        if command == "rotate-keys":
            return _run(_rotate_keys(settings))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        # One line, no traceback: e.g. an SQLite file that cannot be created, a refused login.
        detail = redact(str(getattr(exc, "orig", None) or exc).splitlines()[0])[:300]
        print(f"database error ({type(exc).__name__}): {detail}", file=sys.stderr)
        return 1
    return 2


async def _migrated_database(settings: Settings, *, migrate: bool):  # type: ignore[no-untyped-def]
    """The database and secret box only: what migrate, users and rotate-keys need."""
    from gateway.db.migrate import upgrade_database
    from gateway.services import open_database

    db, secrets = open_database(settings)
    if migrate:
        try:
            await upgrade_database(db)
        except BaseException:
            await db.dispose()
            raise
    return db, secrets


async def _migrate(settings: Settings, target: str | None = None) -> int:
    if target is None:
        db, _ = await _migrated_database(settings, migrate=True)
        await db.dispose()
        print("database is at the latest revision")
        return 0
    from gateway.db.migrate import move_to
    from gateway.services import open_database

    db, _ = open_database(settings)
    try:
        before, after = await move_to(db, target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(f"database moved from {before or 'base'} to {after or 'base'}")
    return 0


async def _users_create(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.users import UserError, create_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat: "):
            print("passwords differ", file=sys.stderr)
            return 2
    db, _ = await _migrated_database(settings, migrate=settings.auto_migrate)
    try:
        user_id = await create_user(db, args.username, password, admin=args.admin)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(f"created user {args.username.strip().lower()!r} (id {user_id})")
    return 0


async def _run_job(settings: Settings, name: str) -> int:
    """Services and connectors (their jobs), no web app and no routes."""
    from gateway.db.migrate import upgrade_database
    from gateway.services import build_services

    services = build_services(settings)
    scheduler = services.scheduler
    if name not in scheduler.jobs:
        known = ", ".join(sorted(scheduler.jobs)) or "none"
        print(f"error: unknown job {name!r} (known: {known})", file=sys.stderr)
        await services.db.dispose()
        return 2
    if settings.auto_migrate:
        try:
            await upgrade_database(services.db)
        except BaseException:
            await services.db.dispose()
            raise
    try:
        async with services.running(dispatch_events=False):
            report = await scheduler.run(name)
    except Exception as exc:  # the job could not run at all: say so, exit non-zero
        print(f"error: job {name} could not run: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{name}: {report.outcome} ({report.succeeded} ok, {report.failed} failed)")
    return 0


async def _rotate_keys(settings: Settings) -> int:
    from gateway.rotation import rotate_all

    db, secrets = await _migrated_database(settings, migrate=settings.auto_migrate)
    try:
        rows, values = await rotate_all(db, secrets)
    finally:
        await db.dispose()
    print(f"re-encrypted {values} secret value(s) in {rows} integration(s)")
    return 0


def serve(settings: Settings) -> int:
    from gateway.app import create_app
    from gateway.users import first_run

    async def build() -> web.Application:
        from gateway.db.migrate import upgrade_database

        app = create_app(settings)
        db = app[keys.DB]
        if settings.auto_migrate:
            await upgrade_database(db)
        password = await first_run(db)
        if password is not None:
            log.warning("First run: created user 'admin' with password: %s", password)
        return app

    log.info(
        "listening on http://%s:%d (public URL %s)",
        settings.host,
        settings.port,
        settings.public_url,
    )
    web.run_app(
        build(),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,  # aiohttp's 60 s outlasts Docker's 10 s
    )
    return 0

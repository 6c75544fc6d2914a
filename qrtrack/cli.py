"""Flask CLI commands for operators, the README and tests: init-db, create-user, create-api-key, backup,
remove-unused-logos, refresh-analytics."""
from __future__ import annotations

import click
from flask import Flask

from . import accounts, codes, keys, rollups
from .errors import QrTrackError
from .store.db import SCHEMA_REVISION, backup_sqlite, upgrade_schema
from .web.context import services


def _fail(error: QrTrackError) -> None:
    raise click.ClickException(error.message)


def schema_report(found_schema: str | None, database_url: str) -> str:
    """What init-db says of the schema: the app's start has already created or upgraded it, and says which."""
    dialect = database_url.split("://", 1)[0].split("+", 1)[0]
    if found_schema == SCHEMA_REVISION:
        return f"{dialect} schema is current ({SCHEMA_REVISION})."
    if found_schema is None:
        return f"{dialect} schema is current ({SCHEMA_REVISION}): created it."
    return f"{dialect} schema is current ({SCHEMA_REVISION}): upgraded it from {found_schema}."


def register_commands(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the database or upgrade it to the current schema."""
        upgrade_schema(services().db)
        click.echo(f"Database ready: {schema_report(services().found_schema, services().settings.DATABASE_URL)}")

    @app.cli.command("create-user")
    @click.argument("username")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
                  help="At least 8 characters. Prompted for when left out.")
    @click.option("--admin", is_flag=True, help="Let this user manage other users.")
    def create_user(username: str, password: str, admin: bool) -> None:
        """Create a user who can log in to the dashboard."""
        try:
            accounts.create_user(services().db, username=username, password=password, is_admin=admin)
        except QrTrackError as error:
            _fail(error)
        click.echo(f"Created {'admin ' if admin else ''}user {username}.")

    @app.cli.command("create-api-key")
    @click.argument("username")
    @click.option("--label", default="cli", show_default=True, help="A name for the key.")
    def create_api_key(username: str, label: str) -> None:
        """Issue an API key for USERNAME; the key is printed once, alone on the last line."""
        db = services().db
        try:
            user = accounts.find_user(db, username)
            raw_key, _ = keys.issue_api_key(db, user_id=user.id, name=label)
        except QrTrackError as error:
            _fail(error)
        click.echo(f"API key {label!r} for {username} (shown once; store it now):")
        click.echo(raw_key)

    @app.cli.command("ensure-admin")
    @click.option("--username", default="admin", show_default=True)
    def ensure_admin(username: str) -> None:
        """Create an admin with a random password when no user exists yet, and print how to log in."""
        db = services().db
        if accounts.count_users(db):
            click.echo("Users exist already; log in with your account.")
            return
        password = accounts.generate_password()
        accounts.create_user(db, username=username, password=password, is_admin=True)
        click.echo(f"Created the first admin. Log in as {username!r} with password {password!r} "
                   "(shown once; change it on the Account page, linked from your name at the top right).")

    @app.cli.command("backup")
    @click.argument("path", type=click.Path(dir_okay=False, writable=True))
    def backup(path: str) -> None:
        """Copy the live SQLite database to PATH safely, even while the app serves requests."""
        if not services().settings.is_sqlite:
            raise click.ClickException("backup works on SQLite; use your database server's own tools")
        try:
            backup_sqlite(services().db, path)
        except QrTrackError as error:
            _fail(error)
        click.echo(f"Backed up to {path}")

    @app.cli.command("remove-unused-logos")
    @click.option("--older-than-hours", type=click.IntRange(min=0), default=24, show_default=True,
                  help="Spare files younger than this: an upload whose form is still being corrected.")
    def remove_unused_logos(older_than_hours: int) -> None:
        """Delete the logo files in instance/logos that no code uses."""
        removed = codes.remove_unused_logos(services().db, services().logo_dir,
                                            older_than_seconds=older_than_hours * 3600)
        click.echo(f"Removed {removed} unused logo file{'' if removed == 1 else 's'}.")

    @app.cli.command("refresh-analytics")
    def refresh_analytics() -> None:
        """Count the scans recorded since the last refresh into the analytics, as reading them would.

        Reports count what is not rolled up yet on each read; on a busy install, running this from
        cron every few minutes keeps every dashboard page from doing that work.
        """
        added = rollups.refresh_rollups(services().db)
        click.echo(f"Counted {added:,} new scan{'' if added == 1 else 's'} into the analytics.")

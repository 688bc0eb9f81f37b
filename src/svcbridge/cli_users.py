"""``svcbridge users add|passwd|unlock|remove|list``: the console's operator accounts (console/accounts.py).

Passwords are never arguments (they would sit in the shell history and in ``ps``): they are asked for
twice on a terminal, or read as one line from stdin with ``--password-stdin`` (scripts, tests).
Attached to the main group by ``cli.py``; the App comes from the factory in ``ctx.obj["app"]``.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

import click
from rich.table import Table

from .cli_work import SafeConsole
from .console.accounts import ROLES, AccountError, Accounts
from .console.throttle import LoginThrottle

out = SafeConsole()
err = SafeConsole(stderr=True)


def _accounts(ctx: click.Context) -> Accounts:
    root = ctx.find_root()
    app: Any = root.obj["app"](root)
    return Accounts(app.store.engine)


def _actor() -> str:
    """Who ran the command, for the audit trail: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return "cli"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


def _run(fn: Any) -> None:
    try:
        fn()
    except AccountError as exc:
        err.print(f"error: {exc}")
        sys.exit(1)


@click.group()
def users() -> None:
    """Operator accounts of the web console."""


@users.command("add")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="admin",
    show_default=True,
    help="readonly: sees every page, can change nothing",
)
@click.option("--tz", default=None, help="time zone for dates on the pages (e.g. Asia/Shanghai)")
@click.option("--password-stdin", is_flag=True, help="read the password as one line from stdin")
@click.pass_context
def users_add(ctx: click.Context, username: str, role: str, tz: str | None, password_stdin: bool) -> None:
    accounts = _accounts(ctx)
    password = _password(password_stdin)
    _run(lambda: accounts.add(username, password, role, tz, actor=_actor()))
    out.print(f"user {username} added ({role})")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the password as one line from stdin")
@click.pass_context
def users_passwd(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Set a new password; the user's open sessions end."""
    accounts = _accounts(ctx)
    if accounts.get(username) is None:
        err.print(f"error: no user {username!r}")
        sys.exit(1)
    password = _password(password_stdin)
    _run(lambda: accounts.passwd(username, password, actor=_actor()))
    out.print(f"password of {username} changed; its sessions ended")


@users.command("unlock")
@click.argument("username")
@click.pass_context
def users_unlock(ctx: click.Context, username: str) -> None:
    """End a login lockout of USERNAME (anyone who knows the name can cause one by guessing); the
    addresses that guessed stay locked."""
    accounts = _accounts(ctx)
    if accounts.get(username) is None:
        err.print(f"error: no user {username!r}")
        sys.exit(1)
    LoginThrottle.unlock(accounts.engine, f"user:{username.lower()}")  # the key console/actions.py counts
    accounts.audit(_actor(), "login_unlocked", username)
    out.print(f"login lockout of {username} ended")


@users.command("remove")
@click.argument("username")
@click.pass_context
def users_remove(ctx: click.Context, username: str) -> None:
    accounts = _accounts(ctx)
    _run(lambda: accounts.remove(username, actor=_actor()))
    out.print(f"user {username} removed")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    rows = _accounts(ctx).all()
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table("user", "role", "time zone", "created")
    for r in rows:
        table.add_row(r["username"], r["role"], r["tz"] or "", r["created_at"].isoformat(timespec="seconds"))
    out.print(table)

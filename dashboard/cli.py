"""``callsense dashboard [--host] [--port]``."""

from __future__ import annotations

import click


@click.command("dashboard")
@click.option("--host", default=None, help="Bind address (default CALLSENSE_DASHBOARD_HOST).")
@click.option("--port", type=int, default=None, help="Port (default CALLSENSE_DASHBOARD_PORT).")
@click.option("--no-migrate", is_flag=True, help="Do not apply database migrations first.")
def dashboard_cmd(host: str | None, port: int | None, no_migrate: bool) -> None:
    """Run the supervisor dashboard and JSON API (sign-in required beyond loopback)."""
    from callsense.dashboard.app import create_app
    from callsense.dashboard.auth import is_loopback

    from callsense.settings import get_settings
    from callsense.storage.db import upgrade

    settings = get_settings()
    host = host or settings.dashboard_host
    port = port or settings.dashboard_port
    if not no_migrate:
        upgrade(settings.effective_database_url)
    try:
        # a set password or named users are always enforced; else only loopback goes unsigned
        require_login = (
            not is_loopback(host)
            or settings.dashboard_password is not None
            or bool(settings.accounts)
        )
        app = create_app(settings, require_login=require_login)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    from waitress import serve

    click.echo(f"callsense dashboard on http://{host}:{port}/ (API: /api/openapi.json)")
    # a production WSGI server (not Flask's development server); no Server header
    serve(app.server, host=host, port=port, threads=settings.dashboard_threads, ident="")


@click.command("hash-password")
@click.password_option(help="The password (asked twice when not given).")
def hash_password_cmd(password: str) -> None:
    """Print a password hash for CALLSENSE_DASHBOARD_USERS (name:role:hash)."""
    from werkzeug.security import generate_password_hash

    click.echo(generate_password_hash(password))

"""``callsense calls list|show`` and ``callsense db upgrade``.

Both groups take ``--database-url`` (default: ``CALLSENSE_DATABASE_URL``, else SQLite under
``CALLSENSE_DATA_DIR``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.orm import Session


def _remember_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.ensure_object(dict)["database_url"] = value


DB_OPTION = click.option(
    "--database-url",
    default=None,
    expose_value=False,
    callback=_remember_url,
    help="SQLAlchemy URL (default: CALLSENSE_DATABASE_URL or SQLite in the data dir).",
)


def _url(ctx: click.Context) -> str:
    url = ctx.obj.get("database_url") if ctx.obj else None
    if url:
        return url
    from callsense.settings import get_settings

    return get_settings().effective_database_url


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from callsense.storage.db import make_engine, session_factory

    engine = make_engine(_url(ctx))
    try:
        with session_factory(engine)() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"database error ({exc.orig.__class__.__name__}: {str(exc.orig).strip()}); "
            "is the URL right and has 'callsense db upgrade' been run?"
        ) from exc
    finally:
        engine.dispose()


@click.group("calls")
@DB_OPTION
def calls_group() -> None:
    """Query stored calls and their per-speaker emotion trajectories."""


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


@calls_group.command("list")
@click.option("--since", default=None, help="Only calls started since T (ISO 8601, or 30m/2h/7d).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_cmd(ctx: click.Context, since: str | None, limit: int, as_json: bool) -> None:
    """Recent calls, newest first."""
    from callsense.storage.queries import list_calls, parse_since

    try:
        since_dt = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    with _session(ctx) as session:
        rows = list_calls(session, since=since_dt, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no calls" + (f" since {since_dt.isoformat()}" if since_dt else ""))
        return
    head = (
        f"{'call_id':<24} {'status':<7} {'started_at':<20} {'dur_s':>7} {'anger':>6} "
        f"{'alerts':>6}  {'agent':<12} {'customer':<12} queue"
    )
    click.echo(head)
    for r in rows:
        started = (r["started_at"] or "")[:19]
        click.echo(
            f"{r['call_id']:<24} {r['status']:<7} {started:<20} {_fmt(r['duration_s'], '.1f'):>7} "
            f"{_fmt(r['anger_share'], '.2f'):>6} {r['alerts']:>6}  {r['agent_id'] or '-':<12} "
            f"{r['customer_id'] or '-':<12} {r['queue'] or '-'}"
        )


@calls_group.command("show")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, call_id: str, as_json: bool) -> None:
    """One call: speakers, trajectories, summary."""
    from callsense.storage.queries import get_call

    with _session(ctx) as session:
        d = get_call(session, call_id)
    if d is None:
        raise click.ClickException(f"call {call_id!r} not found")
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    c = d["call"]
    click.echo(
        f"call {c['call_id']} [{c['status']}] started {c['started_at']} ended {c['ended_at']}"
    )
    click.echo(
        f"agent {c['agent_id'] or '-'}  customer {c['customer_id'] or '-'}  "
        f"queue {c['queue'] or '-'}  duration {_fmt(c['duration_s'], '.1f')} s  "
        f"anger share {_fmt(c['anger_share'], '.2f')}  alerts {c['alerts']}"
    )
    for s in d["speakers"]:
        traj = s["trajectory"]
        click.echo(f"\n{s['speaker']} ({s['role']}): {len(traj)} windows")
        labels = sorted({k for w in traj for k in (w["probabilities"] or {})})
        click.echo(
            f"  {'start_s':>8} {'end_s':>8}  {'label':<10} {'conf':>5}  {'smoothed':<10}"
            + "".join(f" {lab[:7]:>7}" for lab in labels)
        )
        for w in traj:
            click.echo(
                f"  {w['start_ms'] / 1000:8.2f} {w['end_ms'] / 1000:8.2f}  {w['label']:<10} "
                f"{w['confidence']:5.2f}  {(w['smoothed_label'] or '-'):<10}"
                + "".join(f" {w['probabilities'].get(lab, 0.0):7.2f}" for lab in labels)
            )
    summ = d["summary"]
    if summ:
        click.echo(
            f"\nsummary: duration {summ.get('duration_s', 0):.1f} s, anger share "
            f"{summ.get('anger_share', 0):.2f}, peak anger {summ.get('peak_anger', 0):.2f}"
        )
        for spk, s in (summ.get("speakers") or {}).items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(s.get("shares", {}).items()))
            click.echo(f"  {spk} ({s.get('role')}): talk {s.get('talk_time_s', 0):.1f} s; {shares}")
        if summ.get("conversation"):
            from callsense.storage.summary import describe_conversation

            click.echo("\n".join(describe_conversation(summ["conversation"])))


@click.group("db")
@DB_OPTION
def db_group() -> None:
    """Database schema management (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def upgrade_cmd(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION (idempotent; creates the SQLite file if needed)."""
    from callsense.storage.db import upgrade

    url = _url(ctx)
    upgrade(url, revision)
    click.echo(f"database at revision {revision}: {_redact(url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@calls_group.command("search")
@click.option("--from", "started_from", default=None, help="Started at or after (ISO 8601).")
@click.option("--to", "started_to", default=None, help="Started before (ISO 8601).")
@click.option("--agent", default=None, help="Agent id.")
@click.option("--customer", default=None, help="Customer id.")
@click.option("--queue", default=None, help="Queue.")
@click.option(
    "--status",
    type=click.Choice(["active", "ended", "abandoned", "truncated", "failed"]),
    default=None,
)
@click.option("--min-anger-share", type=float, default=None, help="Minimum anger share 0-1.")
@click.option("--alerted/--not-alerted", default=None, help="Only calls with / without alerts.")
@click.option("--min-duration", "min_duration_s", type=float, default=None, help="Seconds.")
@click.option("--max-duration", "max_duration_s", type=float, default=None, help="Seconds.")
@click.option("--sort", default="started_at", show_default=True, help="Sort key.")
@click.option("--asc", "ascending", is_flag=True, help="Ascending order (default descending).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="csv exports every matching row.",
)
@click.pass_context
def search_cmd(ctx: click.Context, fmt: str, ascending: bool, **filters: Any) -> None:
    """Search call history (same filters as the history page and GET /api/calls)."""
    from pydantic import ValidationError

    from callsense.storage.search import CallQuery, calls_csv, search_calls

    values = {k: v for k, v in filters.items() if v is not None}
    try:
        q = CallQuery(order="asc" if ascending else "desc", **values)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else "query"
        hint = {
            "started_from": "--from",
            "started_to": "--to",
            "min_duration_s": "--min-duration",
            "max_duration_s": "--max-duration",
        }.get(field, "--" + field.replace("_", "-"))
        raise click.BadParameter(e["msg"], param_hint=hint) from None
    with _session(ctx) as session:
        if fmt == "csv":
            click.echo(calls_csv(session, q), nl=False)
            return
        page = search_calls(session, q)
    if fmt == "json":
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{page['total']} calls (showing {len(page['items'])} from {q.offset})")
    for r in page["items"]:
        click.echo(
            f"{r['call_id']:<24} {r['status']:<7} {(r['started_at'] or '-')[:19]:<20} "
            f"agent={_fmt(r['agent_id'])} customer={_fmt(r['customer_id'])} "
            f"queue={_fmt(r['queue'])} dur={_fmt(r['duration_s'], '.0f')}s "
            f"anger={_fmt(r['anger_share'], '.2f')} alerts={r['alerts']}"
        )


@click.group("recordings")
def recordings_group() -> None:
    """Call recordings (kept when CALLSENSE_RECORDING_RETENTION_DAYS > 0)."""


@recordings_group.command("purge")
@click.option("--days", type=click.FloatRange(min=0), default=None,
              help="Delete recordings older than this (default: CALLSENSE_RECORDING_RETENTION_DAYS"
                   "; with retention off, every recording).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def purge_cmd(days: float | None, dry_run: bool) -> None:
    """Delete recordings past their retention (run it daily, e.g. from cron)."""
    from callsense.settings import get_settings
    from callsense.storage.recordings import purge

    settings = get_settings()
    keep = days if days is not None else settings.recording_retention_days
    directory = settings.data_dir / "recordings"
    if not directory.is_dir():
        click.echo(f"no recordings directory ({directory})")
        return
    gone = purge(directory, keep, dry_run=dry_run)
    for path in gone:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {path.name}")
    click.echo(f"{len(gone)} file(s) older than {keep:g} days in {directory}")

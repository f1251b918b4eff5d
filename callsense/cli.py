"""The one ``callsense`` command line.

Subcommands live next to the code they drive and are imported lazily, so ``callsense --help``
stays fast and a stage's heavy imports (torch, faust) happen only when that stage runs.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("callsense.broker_cli:broker_cmd", "Run the embedded Kafka-protocol broker."),
    "worker": ("callsense.processors.app:worker_cmd", "Run the Faust stream worker."),
    "demo": ("callsense.demo:demo_cmd", "Broker + worker + dashboard + looping sample calls."),
    "ingest": ("callsense.ingest.cli:ingest_cmd", "Stream audio files to Kafka as calls."),
    "gateway": (
        "callsense.ingest.gateway_cli:gateway_group",
        "Telephony media gateway: live calls in over WebSocket (Twilio, generic).",
    ),
    "analyze": ("callsense.processors.offline:analyze_cmd", "Analyse one file without Kafka."),
    "train": ("callsense.models.cli:train_cmd", "Train / cross-validate the emotion model."),
    "evaluate": ("callsense.models.cli:evaluate_cmd", "Evaluate a model on a manifest."),
    "manifest": ("callsense.models.cli:manifest_cmd", "Build a manifest from a corpus folder."),
    "bench": ("benchmarks.core:bench_group", "Benchmarks (source checkout; JSON results)."),
    "calls": ("callsense.storage.cli:calls_group", "Query stored calls."),
    "db": ("callsense.storage.cli:db_group", "Database migrations."),
    "recordings": ("callsense.storage.cli:recordings_group", "Call recordings (purge)."),
    "dashboard": ("callsense.dashboard.cli:dashboard_cmd", "Run the supervisor dashboard."),
    "hash-password": (
        "callsense.dashboard.cli:hash_password_cmd",
        "Hash a dashboard user's password.",
    ),
    "webhook": ("callsense.processors.webhooks:webhook_group", "Alert webhook tools."),
    "diarize": ("callsense.processors.diarization:diarize_cmd", "Diarize a mono file."),
}


def _checkout_on_path() -> None:
    """Benchmarks are not in the wheel: from a source checkout (the repository beside this
    package), put the checkout's root on the import path so ``benchmarks`` imports."""
    root = Path(__file__).resolve().parent.parent
    if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            target = COMMANDS[cmd_name][0]
            module_name, attr = target.split(":")
            if module_name.startswith("benchmarks."):
                _checkout_on_path()
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name):
                    raise click.ClickException(
                        f"'{cmd_name}' is not available in this build ({exc})"
                    ) from exc
                raise
            return getattr(module, attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        rows += [
            (name, (super(LazyGroup, self).get_command(ctx, name).get_short_help_str()))  # type: ignore[union-attr]
            for name in super().list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="callsense")
def main() -> None:
    """callsense: live speech-emotion analytics for call centers."""


@main.command("config")
@click.option("--markdown", is_flag=True, help="Print the documented settings table.")
def config_cmd(markdown: bool) -> None:
    """Show the effective configuration (secrets masked)."""
    from callsense.settings import get_settings, settings_markdown

    if markdown:
        click.echo(settings_markdown())
        return
    values = get_settings().model_dump(mode="json")
    click.echo(json.dumps(values, indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()

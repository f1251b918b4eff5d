"""The compose stack, validated here without a Docker engine.

* ``docker-compose.yml`` is interpolated the way Compose does it (``${VAR:-default}``,
  ``${VAR:?error}``, ``$$``) with the values of ``.env.example`` and then validated against the
  Compose specification's JSON schema (shipped inside the ``check-jsonschema`` package).
* Every ``callsense ...`` command a service runs must exist in the CLI with those arguments.
* The properties that horizontal scaling depends on are checked explicitly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
# the secrets .env.example leaves empty on purpose; a deployment must set them
TEST_SECRETS = {
    "KAFKA_CLUSTER_ID": "MkU3OEVBNTcwNTJENDM2Qk",
    "POSTGRES_PASSWORD": "pw",
    "CALLSENSE_DASHBOARD_PASSWORD": "pw",
    "CALLSENSE_API_TOKEN": "token",
    "CALLSENSE_GATEWAY_TOKEN": "gw-token",
}
LONG_RUNNING = ("kafka", "postgres", "worker", "dashboard", "gateway")
ONE_SHOT = ("kafka-init", "migrate")

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def _interpolate_str(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if missing else str(current)
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return str(current)
        return "" if current is None else str(current)

    return _VAR.sub(sub, value)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose-style variable interpolation over every string of the loaded document."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, str):
        return _interpolate_str(node, env)
    return node


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def compose_schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(ref.read_text())


def validate(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    # the vendored file names draft-07 as "https://json-schema.org/draft-07/schema", a spelling
    # jsonschema does not look up; pick the draft explicitly instead of a silent fallback
    assert "draft-07" in schema["$schema"], schema["$schema"]
    cls = jsonschema.Draft7Validator
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    values = read_env_file(ENV_EXAMPLE)
    return {**values, **TEST_SECRETS}


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw, env)


def test_compose_file_matches_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert validate(compose) == []


def test_schema_rejects_broken_compose_files(compose: dict[str, Any]) -> None:
    """The validator is not vacuous: typical mistakes are reported."""
    typo = json.loads(json.dumps(compose))
    typo["services"]["worker"]["comand"] = typo["services"]["worker"].pop("command")
    assert any("comand" in e for e in validate(typo))

    bad_depends = json.loads(json.dumps(compose))
    bad_depends["services"]["worker"]["depends_on"]["migrate"]["condition"] = "when_ready"
    assert validate(bad_depends)

    bad_health = json.loads(json.dumps(compose))
    bad_health["services"]["kafka"]["healthcheck"]["intervall"] = "10s"
    assert any("intervall" in e for e in validate(bad_health))

    bad_volume = json.loads(json.dumps(compose))
    bad_volume["volumes"]["kafka-data"] = ["not", "a", "mapping"]
    assert validate(bad_volume)


def test_env_example_covers_every_variable(raw: dict[str, Any]) -> None:
    """Each variable the compose file reads is documented in .env.example, and vice versa."""
    used = set()
    for m in _VAR.finditer(COMPOSE.read_text()):
        if not m.group("escaped"):
            used.add(m.group("braced") or m.group("named"))
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "used in docker-compose.yml but not in .env.example"
    assert documented - used == set(), "in .env.example but never used by docker-compose.yml"


def test_required_secrets_must_be_set(raw: dict[str, Any]) -> None:
    """Copying .env.example unchanged must not start a stack with empty passwords."""
    as_shipped = read_env_file(ENV_EXAMPLE)
    for name in TEST_SECRETS:
        assert as_shipped[name] == "", f"{name} must not ship with a value"
        env = {**as_shipped, **TEST_SECRETS}
        env[name] = ""
        with pytest.raises(InterpolationError, match=name):
            interpolate(raw, env)


def _resolve(argv: list[str]) -> click.Context:
    """Resolve argv through the real click group and parse the leaf command's options and
    arguments (without running it); unknown commands/options raise click.UsageError."""
    from callsense.cli import main

    assert argv[0] == "callsense", argv
    cmd: click.Command = main
    ctx = click.Context(main, info_name="callsense")
    name, args = "callsense", list(argv[1:])
    while isinstance(cmd, click.Group):
        if (not args or args[0].startswith("-")) and cmd.invoke_without_command:
            break  # a group that runs by itself (callsense gateway [--host H])
        if not args or args[0].startswith("-"):
            raise click.UsageError(f"`{' '.join(argv)}` stops at group {name!r}", ctx)
        name, sub, args = cmd.resolve_command(ctx, args)
        assert sub is not None and name is not None
        cmd = sub
        ctx = click.Context(cmd, info_name=name, parent=ctx)
    return cmd.make_context(name, args, parent=ctx.parent)


def _callsense_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for name, svc in compose["services"].items():
        if "build" in svc:
            out[name] = svc["command"]
    return out


def test_every_callsense_service_command_exists_in_cli(compose: dict[str, Any]) -> None:
    services = _callsense_services(compose)
    assert {"migrate", "worker", "dashboard"} <= set(services)
    listed = subprocess.run(
        [sys.executable, "-m", "callsense.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    for name, argv in services.items():
        assert isinstance(argv, list) and argv[0] == "callsense", f"{name}: exec form callsense"
        assert re.search(rf"^\s+{re.escape(argv[1])}\s", listed, re.M), (
            f"service {name}: `callsense {argv[1]}` missing from `callsense --help`"
        )
        _resolve(argv)


def test_cli_resolution_rejects_unknown_commands_and_options() -> None:
    with pytest.raises(click.UsageError, match="No such command"):
        _resolve(["callsense", "no-such-command"])
    with pytest.raises(click.UsageError):
        _resolve(["callsense", "db"])
    with pytest.raises(click.UsageError):
        _resolve(["callsense", "dashboard", "--no-such-option"])


def test_workers_can_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # `--scale worker=N` is impossible with a fixed container name or a published host port
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "replicas" not in worker.get("deploy", {}), "scale with --scale, not a fixed count"
    # no state shared between replicas through a named volume
    assert not [v for v in worker.get("volumes", []) if ":" in str(v)]
    env = worker["environment"]
    assert env["CALLSENSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["CALLSENSE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["CALLSENSE_DATABASE_URL"].endswith("@postgres:5432/callsense")
    assert worker["depends_on"] == {
        "kafka-init": {"condition": "service_completed_successfully"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_infrastructure_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft mode"
    assert not any("ZOOKEEPER" in k for k in kafka["environment"])
    assert services["postgres"]["image"].startswith("postgres:")
    declared = set(compose["volumes"])
    for name, path in (("kafka", "/var/lib/kafka/data"), ("postgres", "/var/lib/postgresql/data")):
        mounts = [v.split(":") for v in services[name]["volumes"]]
        assert [m[0] for m in mounts if m[1] == path] and {m[0] for m in mounts} <= declared
    for name in LONG_RUNNING:
        assert "test" in services[name].get("healthcheck", {}), f"{name} needs a health check"
        assert services[name]["restart"] == "unless-stopped"
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest") or "build" in svc, name
    # the topic init's own files exist
    for mount in services["kafka-init"]["volumes"]:
        assert (REPO / mount.split(":")[0]).is_file(), mount


def test_topic_init_creates_exactly_the_stream_topics() -> None:
    from callsense.processors.events import ALL_TOPICS, AUDIO_TOPICS

    listed: dict[str, str] = {}
    for line in (REPO / "deploy" / "init" / "topics.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, kind = line.split()
            listed[name] = kind
    assert set(listed) == set(ALL_TOPICS)
    assert {n for n, k in listed.items() if k == "audio"} == set(AUDIO_TOPICS)
    assert set(listed.values()) <= {"audio", "data"}


def test_topic_init_script_is_valid_posix_sh() -> None:
    script = REPO / "deploy" / "init" / "create-topics.sh"
    for shell in ("sh", "bash"):
        res = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_callsense_variables_are_real_settings(compose: dict[str, Any]) -> None:
    """Settings ignore unknown CALLSENSE_* variables, so a typo here would pass silently."""
    from callsense.settings import Settings

    fields = {f"CALLSENSE_{name.upper()}" for name in Settings.model_fields}
    for name in _callsense_services(compose):
        env = compose["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("CALLSENSE_")} - fields
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        # the values parse as the typed settings they are meant for
        values = {k[len("CALLSENSE_") :].lower(): v for k, v in env.items() if k in fields}
        values = {k: v for k, v in values.items() if v != ""}
        Settings.model_validate(values)

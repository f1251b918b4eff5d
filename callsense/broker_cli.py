"""``callsense broker``: run one of the brokers of :mod:`callsense.broker` (embedded) or
:mod:`callsense.kafka_broker` (Apache Kafka) in the foreground, and :func:`open_broker`, the one
way the demo and the tests pick a broker by kind."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from callsense.broker import KINDS, BrokerError, BrokerProcess, EmbeddedBroker


def open_broker(kind: str, port: int | None, data_dir: Path, nodes: int = 1) -> BrokerProcess:
    """A not yet started broker of ``kind`` (``nodes`` > 1 only for Apache Kafka)."""
    if kind == "kafka":
        from callsense.kafka_broker import KafkaCluster

        return KafkaCluster(data_dir=data_dir, nodes=nodes, port=port)
    if nodes != 1:
        raise BrokerError(f"--nodes {nodes} needs --kind kafka (the embedded brokers run alone)")
    return EmbeddedBroker(kind=kind, port=port, data_dir=data_dir)


@click.command("broker")
@click.option("--port", type=int, default=None, help="Port (default: the one in KAFKA_BOOTSTRAP).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Broker data directory (default: DATA_DIR/broker, DATA_DIR/kafka for Apache Kafka).",
)
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="noida",
    show_default=True,
    help="noida: persistent, one worker per group; tansu: in memory, several workers; "
    "kafka: Apache Kafka (KRaft) from its jars, needs Java 17+.",
)
@click.option(
    "--nodes",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="Apache Kafka only: 3 = three-node KRaft cluster on consecutive free ports, "
    "topics replicated 3 times, min.insync.replicas=2.",
)
@click.option("--fetch", is_flag=True, help="Only fetch the Apache Kafka jars (Maven), then exit.")
@click.option("--no-topics", is_flag=True, help="Do not pre-create the callsense topics.")
def broker_cmd(
    port: int | None, data_dir: Path | None, kind: str, nodes: str, fetch: bool, no_topics: bool
) -> None:
    """Run a Kafka-protocol broker on 127.0.0.1 in the foreground (Ctrl-C or SIGTERM stops it)."""
    from callsense.settings import get_settings

    if fetch:
        from callsense.kafka_broker import KAFKA_VERSION, fetch_jars

        try:
            click.echo(f"Apache Kafka {KAFKA_VERSION} jars in {fetch_jars(quiet=False)}", err=True)
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    settings = get_settings()
    if port is None:
        port = int(settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
    data_dir = data_dir or settings.data_dir / ("kafka" if kind == "kafka" else "broker")
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        broker = open_broker(kind, port, data_dir, int(nodes))
        broker.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if not no_topics:
            from callsense.processors.events import ensure_topics

            topic_settings = settings.model_copy(update={"topic_replication": int(nodes)})
            created = ensure_topics(broker.bootstrap, topic_settings)
            if created:
                click.echo(f"created topics: {', '.join(created)}", err=True)
        click.echo(
            f"{kind} broker ready on {broker.bootstrap} (data dir {data_dir}); Ctrl-C to stop",
            err=True,
        )
        sys.stderr.flush()
        while not stopping:
            if not broker.running():
                raise click.ClickException("broker exited unexpectedly")
            time.sleep(0.2)
    finally:
        broker.stop()
        click.echo("broker stopped", err=True)

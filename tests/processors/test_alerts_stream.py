"""The alert agents in the real worker: window events on ``callsense.windows`` (real embedded
broker) → alert engine → alerts in the database and on ``callsense.alerts`` → signed webhooks to
a real local receiver that fails its first attempt; a bad event goes to the dead-letter topic.

The events are produced directly to the windows topic (no audio, no model), so the test checks
the alert path alone and stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from callsense.processors.events import ALERTS_TOPIC, DEADLETTER_TOPIC, WINDOWS_TOPIC, dumps
from support.streaming import Worker, base_env, db_scalar, produce, read_topic, wait_for  # noqa: E402
from support.webhooks import SECRET, Receiver, angry_call  # noqa: E402

from callsense.kafka_broker import KafkaCluster  # noqa: E402

pytestmark = pytest.mark.slow
CALL = "alert-stream-1"


def test_worker_raises_stores_publishes_and_delivers_alerts(
    database_url: str, kafka: KafkaCluster, tmp_path: Path
) -> None:
    broker = kafka
    with Receiver(fail_first=1) as recv:
        env = base_env(
            broker.bootstrap, database_url, tmp_path / "data",
            CALLSENSE_WEBHOOK_URL=recv.url, CALLSENSE_WEBHOOK_SECRET=SECRET,
            CALLSENSE_WEBHOOK_BACKOFF_S="0.05",
        )  # fmt: skip
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            msgs = [(CALL.encode(), dumps(e)) for e in angry_call(CALL)]
            msgs.insert(3, (CALL.encode(), b'{"kind": "window", "call_id": "x", "label": 1'))
            produce(broker.bootstrap, msgs, WINDOWS_TOPIC)

            wait_for(
                lambda: db_scalar(database_url, "SELECT count(*) FROM alerts "
                                  "WHERE status = 'resolved'") == 1,
                timeout=120, what="alert raised and resolved in the database", worker=worker,
            )  # fmt: skip
            wait_for(lambda: len(recv.accepted) == 2, timeout=60,
                     what="both webhooks delivered", worker=worker)  # fmt: skip
        finally:
            worker.stop()
        alerts = read_topic(broker.bootstrap, ALERTS_TOPIC)
        dead = read_topic(broker.bootstrap, DEADLETTER_TOPIC)

    assert [a["type"] for a in alerts] == ["alert.raised", "alert.resolved"]
    assert alerts[0]["alert"]["rule"] == "customer_anger"
    assert alerts[1]["alert"]["details"]["resolved_reason"] == "call_ended"
    assert db_scalar(database_url, "SELECT count(*) FROM alerts") == 1  # one per call and rule
    assert db_scalar(database_url, "SELECT rule FROM alerts") == "customer_anger"
    # the receiver failed the first attempt; each change still arrived exactly once, signed
    assert sorted(recv.accepted.values()) == [1, 1]
    assert set(recv.accepted) == {a["event_id"] for a in alerts}
    assert all(r["valid"] for r in recv.requests) and len(recv.requests) == 3
    assert db_scalar(database_url, "SELECT count(*) FROM webhook_deliveries WHERE ok") == 2
    stages = {d["stage"] for d in dead}
    assert "alerts" in stages, dead

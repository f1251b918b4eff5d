"""End-to-end streaming tests with a real broker (Apache Kafka; one smoke test per embedded
broker), a real worker subprocess, the shipped model and real databases (SQLite and PostgreSQL).

* a stereo call built from RAVDESS clips (neutral agent on channel 0, angry customer on
  channel 1) streams through; the worker is SIGKILLed mid-call and restarted; the stored
  windows must equal, window for window and label for label, what ``analyze_file`` computes
  offline for the same file (no window lost, none written twice, stream/offline parity);
* a two-speaker *mono* call (8 kHz) goes through the streaming diarizer in the worker; the
  worker is SIGKILLed mid-call and restarted (its first batch loads the diarization models
  again); the stored windows equal offline analysis with ``diarization_mono`` on, and both
  diarized speakers are stored with their roles;
* bad input (corrupt chunks, a sample-rate change, a chunk for an unknown call, a non-JSON
  message, and every malformed event kind of ``support/poison.py``: 29 kinds) goes to the
  dead-letter topic, one letter each with its reason, while another call is in flight; the
  worker stays up and that call still yields exactly its offline windows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from callsense.processors.events import (  # noqa: E402
    AUDIO_TOPIC,
    DEADLETTER_TOPIC,
    WINDOWS_TOPIC,
    AudioChunk,
    CallEnd,
    CallStart,
    ensure_topics,
)
from support.poison import POISON
from support.streaming import (  # noqa: E402
    Worker,
    assert_same_windows,
    at_rate,
    base_env,
    build_call,
    db_scalar,
    db_windows,
    ingest_call,
    mono_two_speaker_call,
    produce,
    read_topic,
    wait_for,
)

from callsense.broker import EmbeddedBroker  # noqa: E402
from callsense.kafka_broker import KafkaCluster  # noqa: E402
from callsense.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow

AGENT = ("ravdess_04", "neutral", "")  # channel 0
CUSTOMER = ("ravdess_03", "angry", "strong")  # channel 1


@pytest.fixture(scope="module")
def stereo_call(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("call") / "angry_customer.wav"
    return build_call(shared_data, out, left=AGENT, right=CUSTOMER, clips=4)


@pytest.fixture(scope="module")
def offline(stereo_call: Path) -> list[dict[str, Any]]:
    """The windows ``callsense analyze`` computes for the call (same stage code, no Kafka)."""
    from callsense.processors.offline import analyze_file

    results = analyze_file(stereo_call, Settings(), call_id="offline", agent_channel=0)
    return sorted(
        (r.to_row("offline") for r in results), key=lambda r: (r["speaker"], r["start_ms"])
    )


def _broker(kind: str, tmp_path: Path):
    with EmbeddedBroker(kind=kind, data_dir=tmp_path / "broker") as b:
        ensure_topics(b.bootstrap, Settings())
        yield b


@pytest.fixture
def restart_broker(request: pytest.FixtureRequest, tmp_path: Path):
    """The broker named by the test's parameter: Apache Kafka, or an embedded one (Tansu, and
    noida-db, which readmits a restarted worker only through static group membership)."""
    if request.param == "kafka":
        yield request.getfixturevalue("kafka")
    else:
        yield from _broker(request.param, tmp_path)


# Apache Kafka on both databases; the embedded brokers once each, on SQLite
RESTART_MATRIX = pytest.mark.parametrize(
    ("database_url", "restart_broker"),
    [("sqlite", "kafka"), ("postgresql", "kafka"), ("sqlite", "tansu"), ("sqlite", "noida")],
    indirect=True,
)



def _kill_mid_call_and_restart(
    broker: EmbeddedBroker | KafkaCluster,
    url: str,
    call: Path,
    call_id: str,
    tmp_path: Path,
    summary_timeout: float,
    **extra_env: str,
) -> tuple[int, list[dict[str, Any]]]:
    """Stream ``call`` at 2x real time through ``broker`` (checkpoints every 500 ms), SIGKILL the
    worker after its first windows, finish the ingest, start a second worker and wait for the
    call's summary. Returns the number of windows stored at the kill and all stored windows."""
    env = base_env(
        broker.bootstrap,
        url,
        tmp_path / "data",
        CALLSENSE_STATE_CHECKPOINT_MS="500",
        CALLSENSE_BROKER_KIND=broker.kind,
        **extra_env,
    )
    count = f"SELECT count(*) FROM emotion_windows WHERE call_id = '{call_id}'"
    ended = f"SELECT count(*) FROM call_summaries WHERE call_id = '{call_id}'"

    first = Worker(env, tmp_path / "worker1.log").start()
    wait_for(lambda: "Worker ready" in first.log(), 120, "first worker ready", first)
    ingest = ingest_call(env, call, call_id, speed="2")
    try:
        wait_for(lambda: db_scalar(url, count) >= 3, 120, "first windows", first)
        first.kill()  # mid-call: no shutdown code runs
        at_kill = db_scalar(url, count)
        assert db_scalar(url, ended) == 0, "the call must still be in flight"
        out, err = ingest.communicate(timeout=120)
        assert ingest.returncode == 0, err
    finally:
        first.kill()
        if ingest.poll() is None:
            ingest.kill()

    second = Worker(env, tmp_path / "worker2.log").start()
    try:
        wait_for(lambda: db_scalar(url, ended) == 1, summary_timeout, "call summary", second)
        stored = db_windows(url, call_id)
    finally:
        second.stop()

    return at_kill, stored


@RESTART_MATRIX
def test_stream_sigkill_restart_matches_offline(
    database_url: str, restart_broker: Any, stereo_call: Path, offline: list, tmp_path: Path
) -> None:
    call_id = "angry-customer-1"
    at_kill, stored = _kill_mid_call_and_restart(
        restart_broker, database_url, stereo_call, call_id, tmp_path, summary_timeout=180
    )

    assert 0 < at_kill < len(offline), "the kill must interrupt the call"
    # no window lost, none written twice, and exactly the offline windows and labels
    assert_same_windows(stored, offline, sorted(tmp_path.glob("worker*.log")))
    # customer emotion only (the default); the agent is a speaker with talk time, no windows
    speakers = {r["speaker"]: r["role"] for r in stored}
    assert speakers == {"ch1": "customer"}
    assert _speaker_roles(database_url, call_id) == "ch0:agent,ch1:customer"
    customer = [r for r in stored if r["speaker"] == "ch1"]
    angry = sum(r["raw_label"] == "angry" for r in customer)
    assert angry > len(customer) / 2, [r["raw_label"] for r in customer]

    meta = db_scalar(database_url, f"SELECT agent_id || '/' || customer_id || '/' || queue "
                                   f"FROM calls WHERE call_id = '{call_id}'")  # fmt: skip
    assert meta == "agent-7/cust-42/billing"
    # both worker processes left a heartbeat (the dashboard's pipeline banner reads them)
    assert db_scalar(database_url, "SELECT count(*) FROM worker_heartbeats") >= 2
    status = db_scalar(database_url, f"SELECT status FROM calls WHERE call_id = '{call_id}'")
    assert status == "ended"
    # the windows topic may hold replayed duplicates; the database holds each window once
    events = [
        e for e in read_topic(restart_broker.bootstrap, WINDOWS_TOPIC) if e["kind"] == "window"
    ]
    assert len(events) >= len(stored)


@pytest.fixture(scope="module")
def mono_call(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile as sf

    out = tmp_path_factory.mktemp("mono") / "mono_two_speakers_8k.wav"
    sf.write(str(out), at_rate(mono_two_speaker_call(shared_data), 8000), 8000, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def mono_offline(mono_call: Path) -> list[dict[str, Any]]:
    from callsense.processors.offline import analyze_file

    results = analyze_file(mono_call, Settings(diarization_mono=True), call_id="offline")
    return sorted(
        (r.to_row("offline") for r in results), key=lambda r: (r["speaker"], r["start_ms"])
    )


@RESTART_MATRIX
def test_stream_diarized_mono_sigkill_restart_matches_offline(
    database_url: str, restart_broker: Any, mono_call: Path, mono_offline: list, tmp_path: Path
) -> None:
    call_id = "mono-two-speakers-1"
    at_kill, stored = _kill_mid_call_and_restart(
        restart_broker, database_url, mono_call, call_id, tmp_path, summary_timeout=240,
        CALLSENSE_DIARIZATION_MONO="true",
    )  # fmt: skip

    assert 0 < at_kill < len(mono_offline), "the kill must interrupt the call"
    assert_same_windows(stored, mono_offline, sorted(tmp_path.glob("worker*.log")))
    speakers = {r["speaker"]: r["role"] for r in stored}
    assert speakers == {"spk1": "customer"}
    assert _speaker_roles(database_url, call_id) == "spk0:agent,spk1:customer"
    status = db_scalar(database_url, f"SELECT status FROM calls WHERE call_id = '{call_id}'")
    assert status == "ended"


def _speaker_roles(database_url: str, call_id: str) -> str:
    """'speaker:role,...' of the call's speakers table rows, by speaker."""
    return db_scalar(
        database_url,
        f"SELECT string_agg(speaker || ':' || role, ',') FROM (SELECT speaker, role FROM "
        f"speakers WHERE call_id = '{call_id}' ORDER BY speaker) s"
        if database_url.startswith("postgresql")
        else f"SELECT group_concat(speaker || ':' || role, ',') FROM (SELECT speaker, role "
        f"FROM speakers WHERE call_id = '{call_id}' ORDER BY speaker)",
    )


def _chunk(call_id: str, seq: int, start: int, audio, rate: int = 16000) -> bytes:
    return AudioChunk.from_array(call_id, seq, start, rate, audio).encode()


def _poison_key(value: bytes) -> bytes:
    """The key a producer would give a raw event: its call id when it has one."""
    m = re.search(rb'"call_id": "([^"]+)"', value)
    return m.group(1) if m else b"junk"


@pytest.mark.fault_suite  # also run by make test-faults
def test_bad_input_goes_to_deadletter_other_call_unaffected(
    kafka: KafkaCluster, stereo_call: Path, offline: list, tmp_path: Path
) -> None:
    import numpy as np

    url = f"sqlite:///{tmp_path / 'bad.db'}"
    env = base_env(kafka.bootstrap, url, tmp_path / "data", CALLSENSE_BROKER_KIND="kafka")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: "Worker ready" in worker.log(), 120, "worker ready", worker)
        good = ingest_call(env, stereo_call, "good-call", speed="4")  # in flight meanwhile

        rng = np.random.default_rng(0)
        tone = (0.1 * rng.standard_normal((2, 4000))).astype(np.float32)
        bad = "bad-call"
        k = bad.encode()
        corrupt_b64 = json.loads(AudioChunk.from_array(bad, 1, 4000, 16000, tone).to_json())
        corrupt_b64["pcm"] = "!!not base64!!"  # a text chunk
        odd_length = _chunk(bad, 2, 8000, tone) + b"\x00"  # not whole stereo int16 frames
        produce(kafka.bootstrap, [
            (k, CallStart(bad, 16000, 2).encode()),
            (k, _chunk(bad, 0, 0, tone)),
            (k, json.dumps(corrupt_b64).encode()),
            (k, odd_length),
            (k, _chunk(bad, 3, 12000, tone[:, :2000], rate=8000)),  # rate change mid-call
            (k, _chunk(bad, 4, 16000, tone)),
            (k, CallEnd(bad, 4, 20000).encode()),
            (b"ghost", _chunk("ghost", 0, 0, tone)),  # never started
            (b"junk", b"\x00\xffnot json"),
        ], AUDIO_TOPIC)  # fmt: skip
        # every malformed event kind the parser knows, keyed as a producer would key it
        produce(kafka.bootstrap, [(_poison_key(v), v) for v, _reason in POISON], AUDIO_TOPIC)
        # a keyless chunk, and an oversize chunk that arrives before the chunk it follows
        big, kb = "big-call", b"big-call"
        huge = (0.1 * rng.standard_normal((2, 80_000))).astype(np.float32)  # 5 s: 320 kB
        produce(kafka.bootstrap, [
            (None, _chunk(bad, 5, 20000, tone)),
            (kb, CallStart(big, 16000, 2).encode()),
            (kb, _chunk(big, 1, 4000, huge)),
            (kb, _chunk(big, 0, 0, tone)),
            (kb, _chunk(big, 2, 84000, tone)),
            (kb, CallEnd(big, 2, 88000).encode()),
        ], AUDIO_TOPIC)  # fmt: skip

        out, err = good.communicate(timeout=120)
        assert good.returncode == 0, err
        done = ("SELECT count(*) FROM call_summaries "
                "WHERE call_id IN ('good-call', 'bad-call', 'big-call')")  # fmt: skip
        wait_for(lambda: db_scalar(url, done) == 3, 180, "every call ended", worker)
        stored = db_windows(url, "good-call")
        alive = worker.alive()
    finally:
        worker.stop()

    assert_same_windows(stored, offline)
    dead = read_topic(kafka.bootstrap, DEADLETTER_TOPIC)
    reasons = {d["call_id"]: [] for d in dead}
    for d in dead:
        reasons[d["call_id"]].append(d["reason"])
        assert d["stage"] == "processor" and d["original"]
    bad_reasons = " | ".join(reasons.get("bad-call", []))
    assert "not valid base64" in bad_reasons
    assert "whole number" in bad_reasons
    assert "sample rate changed mid-call" in bad_reasons
    assert len(reasons["bad-call"]) == 3
    # one worker, never restarted: a record re-read after a rebalance is not dead-lettered twice
    idents = [(d["stage"], d["topic"], d["partition"], d["offset"]) for d in dead]
    assert len(set(idents)) == len(idents)
    assert any("unknown call" in r for r in reasons.get("ghost", []))
    assert any("not JSON" in r for r in reasons.get(None, []))
    assert "good-call" not in reasons
    assert any("no key" in r for r in reasons.get(None, []))
    assert len(reasons["big-call"]) == 1 and "more than this call takes" in reasons["big-call"][0]
    # the poison matrix: each kind dead-lettered with its own reason, the worker alive throughout
    poisoned = [d["reason"] for d in dead if d["call_id"] in ("c", None)]
    for _value, reason in POISON:
        assert any(re.search(reason, r) for r in poisoned), reason
    kinds = len(POISON) + 7  # + corrupt base64, torn frames, rate change, unknown call, junk,
    # keyless, oversize
    print(f"poison kinds: {kinds}, dead letters: {len(dead)}, worker alive: {alive}")
    assert kinds >= 15 and alive
    # the bad call itself kept going: its good chunks were processed and it ended normally
    assert db_scalar(url, "SELECT status FROM calls WHERE call_id = 'bad-call'") == "ended"
    # the oversize chunk was refused alone (the unit test shows chunk 0 is still used)
    assert db_scalar(url, "SELECT status FROM calls WHERE call_id = 'big-call'") == "ended"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sample_calls_stream_to_the_windows_file_analysis_gives(
    database_url: str, tmp_path: Path
) -> None:
    """The shipped sample calls (both agent-channel layouts) through a worker on the embedded
    broker give exactly the windows `callsense analyze` gives for the files: one code path."""
    from callsense.ingest.samples import sample_calls
    from callsense.processors.offline import analyze_file

    calls = sample_calls()
    with EmbeddedBroker(kind="tansu", data_dir=tmp_path / "broker") as broker:
        ensure_topics(broker.bootstrap, Settings())
        env = base_env(broker.bootstrap, database_url, tmp_path / "data",
                       CALLSENSE_BROKER_KIND=broker.kind)  # fmt: skip
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            wait_for(lambda: "Worker ready" in worker.log(), 120, "worker ready", worker)
            for c in calls:
                ingest = ingest_call(env, Path(c["path"]), c["call_id"], "max", c["agent_channel"])
                _out, err = ingest.communicate(timeout=120)
                assert ingest.returncode == 0, err
            ended = "SELECT count(*) FROM call_summaries"
            wait_for(lambda: db_scalar(database_url, ended) == len(calls), 180, "summaries", worker)
        finally:
            worker.stop()
    for c in calls:
        results = analyze_file(Path(c["path"]), Settings(), call_id=c["call_id"],
                               agent_channel=c["agent_channel"])  # fmt: skip
        offline = sorted((r.to_row(c["call_id"]) for r in results),
                         key=lambda r: (r["speaker"], r["start_ms"]))  # fmt: skip
        assert offline, c["call_id"]
        stored = db_windows(database_url, c["call_id"])
        assert_same_windows(stored, offline, [tmp_path / "worker.log"])

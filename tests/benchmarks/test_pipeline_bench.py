"""``callsense bench pipeline``: the summary and plot of runs (the runs themselves need minutes of
real-time audio and run apart, with ``make bench``)."""

from __future__ import annotations

from pathlib import Path


def test_medians_skip_missing_values_and_plot_is_written(tmp_path: Path) -> None:
    from benchmarks.pipeline import _median, plot

    runs = [
        {"backlog_s": 1.0, "latency_s": {"p95": 2.0}},
        {"backlog_s": 3.0, "latency_s": {"p95": None}},  # a run without windows
        {"backlog_s": 2.5, "latency_s": {"p95": 4.0}},
    ]
    assert _median(runs, "backlog_s") == 2.5
    assert _median(runs, "latency_s", "p95") == 3.0
    result = {
        "workers": 2, "partitions": 8, "emotion_roles": "customer", "broker": "tansu",
        "by_calls": [
            {"calls": n, "median_backlog_s": b,
             "median_latency_s": {"p50": 0.5 * b, "p95": b, "p99": 1.2 * b}}
            for n, b in ((1, 0.4), (20, 0.9), (60, 5.0))
        ],
    }  # fmt: skip
    plot(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_latency_is_bounded_by_the_chunk_and_vad_block() -> None:
    """A window can wait at most for the rest of its chunk and of its VAD block (plus the
    hangover frames that end it), never seconds."""
    from callsense.ingest.producer import load_call_audio

    from benchmarks.pipeline import stage_latency
    from callsense.demo import sample_calls

    sample = next(c for c in sample_calls() if c["channels"] == 2)
    audio, sr = load_call_audio(sample["path"])
    lat = stage_latency(audio, sr, sample["agent_channel"], "customer")
    bound = (lat["chunk_ms"] + lat["vad_block_ms"] + 150) / 1000
    assert 0 < lat["p50"] <= lat["p95"] <= bound

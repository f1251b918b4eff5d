"""Conversation metrics from speech segments: silence, overtalk, interruptions, monologues."""

import pytest
from callsense.processors.conversation import conversation_metrics

ROLES = {"ch0": "agent", "ch1": "customer"}


def test_turn_taking_with_a_long_silence_and_an_interruption() -> None:
    # agent 0-10 s; customer 11-20 s; 5 s of nobody; customer 25-30 s;
    # agent starts at 29 s over the customer (1 s together: an interruption) and talks to 40 s
    segs = {"ch0": [(0, 10_000), (29_000, 40_000)], "ch1": [(11_000, 20_000), (25_000, 30_000)]}
    m = conversation_metrics(segs, ROLES, duration_ms=45_000)
    assert m["overtalk_s"] == 1.0
    assert m["silence_s"] == 1.0 + 5.0  # the tail after the last word (hang-up) is not counted
    assert m["long_silences"] == 1 and m["long_silence_s"] == 5.0 and m["longest_silence_s"] == 5.0
    agent, customer = m["speakers"]["ch0"], m["speakers"]["ch1"]
    assert agent["talk_time_s"] == 21.0 and customer["talk_time_s"] == 14.0
    assert agent["talk_ratio"] == pytest.approx(0.6) and agent["talk_share"] == 21.0 / 45.0
    assert agent["interruptions"] == 1 and customer["interruptions"] == 0
    # the customer's floor: 11-20 s, then a 5 s gap ends it; 25 s until the agent takes over at 30
    assert customer["longest_monologue_s"] == 9.0 and customer["turns"] == 2
    assert agent["longest_monologue_s"] == 11.0 - 1.0 and agent["turns"] == 2  # 30-40 s alone


def test_back_channel_is_overtalk_not_an_interruption_and_keeps_the_floor() -> None:
    segs = {"ch0": [(0, 20_000)], "ch1": [(5_000, 5_300), (12_000, 12_400)]}
    m = conversation_metrics(segs, ROLES, duration_ms=20_000)
    assert m["speakers"]["ch1"]["interruptions"] == 0
    assert m["overtalk_s"] == pytest.approx(0.7)
    assert m["speakers"]["ch0"]["longest_monologue_s"] == 20.0
    assert m["speakers"]["ch1"]["turns"] == 0 and m["silence_s"] == 0.0


def test_short_pauses_keep_a_monologue_long_ones_end_it() -> None:
    segs = {"ch0": [(0, 4_000), (6_000, 10_000), (14_000, 15_000)], "ch1": []}
    m = conversation_metrics(segs, ROLES, duration_ms=15_000)
    assert m["speakers"]["ch0"]["longest_monologue_s"] == 10.0  # a 2 s pause does not end it
    assert m["speakers"]["ch0"]["turns"] == 2  # the 4 s pause did
    assert m["long_silences"] == 1 and m["silence_s"] == 6.0


def test_live_call_counts_the_silence_so_far_and_empty_calls_are_defined() -> None:
    segs = {"ch0": [(0, 2_000)], "ch1": []}
    live = conversation_metrics(segs, ROLES, duration_ms=10_000, ended=False)
    assert live["silence_s"] == 8.0 and live["long_silences"] == 1
    empty = conversation_metrics({"ch0": [], "ch1": []}, ROLES, duration_ms=0)
    assert empty["silence_s"] == 0.0 and empty["speakers"]["ch1"]["talk_ratio"] == 0.0
    # unsorted and touching segments are merged; a segment past the call's end is cut
    odd = conversation_metrics({"ch0": [(3_000, 5_000), (0, 3_000)]}, ROLES, duration_ms=4_000)
    assert odd["speakers"]["ch0"]["turns"] == 1 and odd["silence_s"] == 0.0

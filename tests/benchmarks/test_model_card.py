"""The model card's LOCO tables from results files: numbers carried over, bars judged."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.model_card import configs_table, corpus_table, load, summary


def _fold(corpus: str, ua: float, auc: float | None, ece: float) -> dict:
    m = {"n": 10, "classes_present": ["angry", "neutral"], "ua": ua, "macro_f1": ua - 0.05,
         "ece": ece, "angry_auc": auc,
         "angry_alert": {"precision": 0.5, "recall": 0.25, "flagged": 4, "angry": 8}}  # fmt: skip
    return {"corpus": corpus, "clean": m}


def test_tables_carry_the_numbers_and_judge_the_bars(tmp_path: Path) -> None:
    good = {"corpora": ["a", "b"], "config": {"head": "stats_linear", "balance": "corpus"},
            "folds": [_fold("a", 0.60, 0.90, 0.05), _fold("b", 0.56, None, 0.07)]}  # fmt: skip
    weak = {"corpora": ["a", "b"], "config": {"head": "stats_linear", "balance": "class"},
            "folds": [_fold("a", 0.70, 0.80, 0.05), _fold("b", 0.39, 0.95, 0.2)]}  # fmt: skip
    good["folds"][0]["tel"] = {**good["folds"][0]["clean"], "ua": 0.50}
    good["folds"][1]["tel"] = {**good["folds"][1]["clean"], "ua": 0.44}
    for name, res in (("good", good), ("weak", weak)):
        (tmp_path / f"loco_{name}.json").write_text(json.dumps(res))
    runs = load(tmp_path)
    assert list(runs) == ["good", "weak"]
    s = summary(runs["good"])
    assert round(s["ua_mean"], 3) == 0.58 and s["ua_min"] == 0.56 and s["auc_mean"] == 0.9
    table = configs_table(runs).splitlines()
    assert table[2].startswith("| good |") and table[2].endswith("| yes |")
    assert "| 58.0 | 56.0 |" in table[2]
    assert "| 47.0 / 44.0 | yes |" in table[2]  # telephone mean / min, shown beside the bars
    assert "| – | no |" in table[3]  # no telephone rows
    assert table[3].endswith("| no |")  # a corpus below 40, ECE and AUC off the bars
    detail = corpus_table(runs["good"]).splitlines()
    assert detail[2] == "| a | 10 | angry, neutral | 60.0 | 55.0 | 0.050 | 0.900 | 50.0 | 25.0 |"
    assert "| b | 10 |" in detail[3] and "| – |" in detail[3]

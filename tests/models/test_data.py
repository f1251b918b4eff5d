"""Manifests, corpus readers, label sets and speaker-independent folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from callsense.models.data import build_manifest, read_manifest, speaker_folds
from callsense.models.labels import get_label_set


def _touch_wavs(root: Path, names: list[str]) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.zeros(1600, dtype=np.float32), 16000)


@pytest.mark.parametrize(
    ("corpus", "names", "expected"),
    [
        (
            "ravdess",
            [
                "Actor_01/03-01-05-01-01-01-01.wav",
                "Actor_02/03-01-02-02-01-01-02.wav",
                "Actor_02/03-02-05-01-01-01-02.wav",
            ],  # song file skipped
            {("ravdess_01", "angry"), ("ravdess_02", "calm")},
        ),
        (
            "cremad",
            ["1001_DFA_ANG_XX.wav", "1002_IEO_NEU_LO.wav"],
            {("cremad_1001", "angry"), ("cremad_1002", "neutral")},
        ),
        (
            "tess",
            ["OAF_angry/OAF_back_angry.wav", "YAF_ps/YAF_bath_ps.wav",
             "testnew/751testOA_bite_neutral48.wav", "testnew/0testYAF_gaze_ps39.wav"],
            {("tess_OAF", "angry"), ("tess_YAF", "surprise"), ("tess_OAF", "neutral")},
        ),
        (
            "ased",
            ["01Neutral/n1-01-01-01-01.wav", "05Angry/a5-02-03-02-64.wav",
             "04Sad/S4-01-01-01-07.wav", "README.wav"],
            {("ased_01", "neutral"), ("ased_64", "angry"), ("ased_07", "sad")},
        ),
        (
            "emospeech",
            ["Metro/go-safe-angry-1562907046662-9dd2014cc6e95226ece8fd97fa8296acea7957d841ba4.wav",
             "House/no-noisy-Calm-20190710134657-d14a028c2a3a2bc9476102bb288234c415a2b01f828ea"
             "62ac5b3e42f.wav",
             "Misc/background-safe-None-20190701193438-9dd2014cc6e95226ece8fd97fa82.wav"],
            {("emospeech_9dd2014cc6e9", "angry"), ("emospeech_unknown", "calm")},
        ),
        (
            "emotiontts",
            ["Emotional/neo/wav/neo00001.wav", "Emotional/neo/wav/neo00150.wav",
             "Emotional/nea/wav/nea00201.wav", "Emotional/neb/wav/neb00400.wav"],
            {("emotiontts_neo", "neutral"), ("emotiontts_neo", "happy"),
             ("emotiontts_nea", "sad"), ("emotiontts_neb", "angry")},
        ),
        ("savee", ["DC_a01.wav", "JK/sa03.wav"], {("savee_DC", "angry"), ("savee_JK", "sad")}),
        ("emodb", ["03a01Wa.wav", "16b10Lb.wav"], {("emodb_03", "angry"), ("emodb_16", "boredom")}),
    ],
)
def test_corpus_readers(tmp_path: Path, corpus: str, names: list[str], expected: set) -> None:
    _touch_wavs(tmp_path / "corpus", names)
    out = tmp_path / "out" / "manifest.csv"
    build_manifest(corpus, tmp_path / "corpus", out)
    items = read_manifest(out)
    assert {(it.speaker, it.emotion) for it in items} == expected
    assert all(it.path.is_file() for it in items)  # paths are relative to the CSV
    assert not Path(out.read_text().splitlines()[1].split(",")[0]).is_absolute()


def test_manifest_cli_and_unknown_layout(tmp_path: Path) -> None:
    from callsense.models.cli import manifest_cmd
    from click.testing import CliRunner

    _touch_wavs(tmp_path, ["random_name.wav"])
    r = CliRunner().invoke(manifest_cmd, ["emodb", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert r.exit_code != 0 and "no emodb audio files" in r.output
    r = CliRunner().invoke(manifest_cmd, ["nope", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert r.exit_code != 0 and "unknown corpus 'nope'" in r.output
    r = CliRunner().invoke(manifest_cmd, ["tess", "--out", str(tmp_path / "m.csv")])
    assert r.exit_code != 0 and "pairs" in r.output


def test_manifest_over_several_corpora(tmp_path: Path) -> None:
    """``callsense manifest A dirA B dirB manifest m.csv --out`` writes one manifest over all."""
    from callsense.models.cli import manifest_cmd
    from click.testing import CliRunner

    _touch_wavs(tmp_path / "tess", ["OAF_angry/OAF_back_angry.wav"])
    _touch_wavs(tmp_path / "ased", ["01Neutral/n1-01-01-01-01.wav", "05Angry/a5-01-01-02-02.wav"])
    _touch_wavs(tmp_path / "rav", ["Actor_01/03-01-05-01-01-01-01.wav"])
    build_manifest("ravdess", tmp_path / "rav", tmp_path / "rav" / "MANIFEST.csv")
    out = tmp_path / "all" / "union.csv"
    r = CliRunner().invoke(manifest_cmd, [
        "tess", str(tmp_path / "tess"), "ased", str(tmp_path / "ased"),
        "manifest", str(tmp_path / "rav" / "MANIFEST.csv"), "--out", str(out),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    items = read_manifest(out)
    assert {(it.corpus, it.speaker, it.emotion) for it in items} == {
        ("tess", "tess_OAF", "angry"), ("ased", "ased_01", "neutral"),
        ("ased", "ased_02", "angry"), ("ravdess", "ravdess_01", "angry"),
    }  # fmt: skip
    assert all(it.path.is_file() for it in items)
    assert next(it for it in items if it.corpus == "ravdess").extra["intensity"] == "normal"


def test_label_sets() -> None:
    four = get_label_set("callcenter4")
    assert four.labels == ("angry", "happy", "neutral", "sad")
    assert four.map("calm") == "neutral" and four.map("Anger") == "angry"
    assert four.map("fear") is None and four.map("boredom") is None
    eight = get_label_set("ravdess8")
    assert len(eight.labels) == 8 and eight.map("calm") == "calm"
    custom = get_label_set("angry,neutral,boredom=neutral")
    assert custom.map("boredom") == "neutral"
    with pytest.raises(ValueError):
        get_label_set("nonsense")


def _assert_disjoint(folds: list, speakers: list[str]) -> None:
    tests = []
    for f in folds:
        tr, va, te = set(f.train), set(f.val), set(f.test)
        assert not (tr & va) and not (tr & te) and not (va & te), f
        assert tr | va | te == set(speakers)
        tests.extend(f.test)
    assert sorted(tests) == sorted(set(speakers))  # every speaker tested exactly once


def test_ravdess_folds_speaker_disjoint(shared_data: Path) -> None:
    items = read_manifest(shared_data / "ravdess" / "MANIFEST.csv")
    speakers = sorted({it.speaker for it in items})
    folds = speaker_folds([it.speaker for it in items], k=6, n_val=2, seed=0)
    assert len(folds) == 6 and all(len(f.test) == 4 for f in folds)
    assert folds[0].test == ("ravdess_01", "ravdess_02", "ravdess_03", "ravdess_04")  # EmoBox
    _assert_disjoint(folds, speakers)
    # per clip: no clip's speaker crosses splits
    for f in folds:
        split = (
            {s: "train" for s in f.train} | {s: "val" for s in f.val} | {s: "test" for s in f.test}
        )
        assert len({split[it.speaker] for it in items if it.speaker in f.test}) == 1
    assert folds == speaker_folds([it.speaker for it in items], k=6, n_val=2, seed=0)


def test_folds_generic_speakers() -> None:
    spk = [f"s{i}" for i in range(10)]
    folds = speaker_folds(spk * 3, k=5, n_val=2, seed=3)
    _assert_disjoint(folds, spk)
    with pytest.raises(ValueError):
        speaker_folds(["a", "b"], k=6)


def test_leave_one_corpus_out_folds() -> None:
    from callsense.models.data import corpus_folds

    corpus_of = {f"a_{i}": "a" for i in range(6)} | {f"b_{i}": "b" for i in range(4)}
    corpus_of |= {"c_0": "c", "c_1": "c", "unknown": "b"}
    folds = corpus_folds(list(corpus_of), corpus_of, seed=1, no_val=["unknown"])
    assert [f.name for f in folds] == ["a", "b", "c"]
    _assert_disjoint(folds, list(corpus_of))
    for f in folds:
        assert {corpus_of[s] for s in f.test} == {f.name}  # the whole corpus is left out
        assert f.name not in {corpus_of[s] for s in f.train + f.val}
        assert "unknown" not in f.val
    # one validation speaker per training corpus that can spare one (c has only two)
    assert sorted(corpus_of[s] for s in folds[0].val) == ["b"]
    assert sorted(corpus_of[s] for s in folds[2].val) == ["a", "b"]
    assert folds == corpus_folds(list(corpus_of), corpus_of, seed=1, no_val=["unknown"])
    with pytest.raises(ValueError, match="at least 2 corpora"):
        corpus_folds(["a_0", "a_1"], {"a_0": "a", "a_1": "a"})
    # calibration on a held-out training corpus: the one with the fewest speakers
    held = corpus_folds(list(corpus_of), corpus_of, no_val=["unknown"], calibration="corpus")
    _assert_disjoint(held, list(corpus_of))
    assert [sorted({corpus_of[s] for s in f.val}) for f in held] == [["c"], ["c"], ["b"]]
    assert "unknown" not in held[2].val and "unknown" in held[2].train
    assert not {corpus_of[s] for s in held[0].train} & {"c"}  # not in the first fit
    with pytest.raises(ValueError, match="calibration"):
        corpus_folds(list(corpus_of), corpus_of, calibration="test")


def test_unknown_speakers_become_one_speaker_per_clip(tmp_path: Path) -> None:
    from callsense.models.data import split_unknown_speakers

    names = [
        "go-safe-angry-1-d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f.wav",
        "no-safe-calm-2-d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f.wav",
        "go-safe-happy-3-9dd2014cc6e95226ece8fd97fa82.wav",
        "no-safe-happy-4-9dd2014cc6e95226ece8fd97fa82.wav",
    ]
    _touch_wavs(tmp_path / "c", names)
    build_manifest("emospeech", tmp_path / "c", tmp_path / "m.csv")
    items = split_unknown_speakers(read_manifest(tmp_path / "m.csv"))
    speakers = [it.speaker for it in items]
    assert len({s for s in speakers if s.startswith("emospeech_unknown")}) == 2
    assert speakers.count("emospeech_9dd2014cc6e9") == 2


def test_speaker_folds_over_several_corpora_cut_each_corpus() -> None:
    """Several corpora: every test fold holds a share of every corpus (so no fold trains
    without one), speakers stay disjoint and each is tested once; one corpus: as before."""
    from callsense.models.data import speaker_folds

    corpus_of = {f"a_{i}": "a" for i in range(1, 13)} | {f"b_{i}": "b" for i in range(1, 7)}
    folds = speaker_folds(list(corpus_of), k=3, n_val=2, corpus_of=corpus_of)
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(corpus_of)
    for f in folds:
        assert {corpus_of[s] for s in f.test} == {"a", "b"}
        assert [corpus_of[s] for s in f.test].count("a") == 4
        assert not (set(f.test) | set(f.val)) & set(f.train)
    unknown = [s for s in corpus_of if s.startswith("b")]
    for f in speaker_folds(list(corpus_of), k=3, n_val=2, corpus_of=corpus_of, no_val=unknown):
        assert not set(f.val) & set(unknown) and len(f.val) == 2
    one = {s: "a" for s in corpus_of if s.startswith("a")}
    assert speaker_folds(list(one), k=3, corpus_of=one)[0].test == ("a_1", "a_2", "a_3", "a_4")

"""Corpus readers: every file format and every id form, on small hand-written files."""
from __future__ import annotations

from pathlib import Path

import pytest

from spacy_angel.types import Mention
from spacy_angel.errors import CorpusFormatError
from training.data.records import MentionList
from spacy_angel.kb.normalize import normalize_id
from training.data.preprocess import preprocess
from training.data.corpora import (
    mention_context,
    read_askapatient,
    read_biosyn_dir,
    read_corpus,
    read_docbin,
    read_pubtator,
)


TITLE = "Duchenne muscular dystrophy (DMD) and breast and ovarian cancers."
ABSTRACT = "Boys with DMD. X-linked immunodeficiency disease is rare. Copper toxicosis too."
TEXT = TITLE + " " + ABSTRACT


def _span(s: str, text: str = TEXT) -> str:
    i = text.index(s)
    return f"{i}\t{i + len(s)}\t{s}"


def _pubtator(tmp_path: Path, annotations: list, name: str = "corpus.txt", extra: str = "") -> Path:
    lines = [f"111|t|{TITLE}", f"111|a|{ABSTRACT}", *annotations, "", extra]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_normalize_id() -> None:
    assert normalize_id("MESH:D001943") == "D001943"
    assert normalize_id("mesh:D001943") == "D001943"
    assert normalize_id(" OMIM:215600 ") == "215600"
    assert normalize_id(" D008661") == "D008661"
    assert normalize_id("C535662") == "C535662"


def test_pubtator_all_id_forms(tmp_path: Path) -> None:
    second_title = "Second doc."
    second = "\n".join(
        [
            f"222|t|{second_title}",
            "222|a|",
            "222\t0\t6\tSecond\tSpecificDisease\t-1",
            "222\tCID\tD001\tD002",  # relation line (BC5CDR)
        ]
    )
    p = _pubtator(
        tmp_path,
        [
            f"111\t{_span('Duchenne muscular dystrophy')}\tSpecificDisease\tMESH:D020388",
            f"111\t{_span('DMD')}\tSpecificDisease\tD020388",
            f"111\t{_span('breast and ovarian cancers')}\tCompositeMention\tD001943|D010051",
            f"111\t{_span('X-linked immunodeficiency disease')}\tDiseaseClass\tD007153+D040181",
            f"111\t{_span('Copper toxicosis')}\tModifier\t OMIM:215600",
            "111\t0\t3\tDuc\tModifier\t-1",
        ],
        extra=second,
    )
    ml = read_pubtator(p)
    assert isinstance(ml, MentionList) and isinstance(ml, list)
    assert [m.surface for m in ml] == [
        "Duchenne muscular dystrophy",
        "DMD",
        "breast and ovarian cancers",
        "X-linked immunodeficiency disease",
        "Copper toxicosis",
    ]
    assert [m.gold_ids for m in ml] == [
        ("D020388",),
        ("D020388",),
        ("D001943", "D010051"),
        ("D007153", "D040181"),
        ("215600",),
    ]
    assert all(m.doc_id == "111" and m.text == TEXT for m in ml)
    assert [ml.is_conjunct(m) for m in ml] == [False, False, False, True, False]
    r = ml.report
    assert (r.documents, r.records, r.mentions) == (2, 7, 5)
    assert (r.composite, r.conjunct, r.skipped_unnormalisable) == (1, 1, 2)
    assert r.to_dict()["format"] == "pubtator"


def test_pubtator_seventh_column_and_composite_modes(tmp_path: Path) -> None:
    ann = [
        f"111\t{_span('breast and ovarian cancers')}\tDisease\tD001943|D010051\tbreast cancers|ovarian cancers",
        f"111\t{_span('DMD')}\tDisease\tD020388",
    ]
    p = _pubtator(tmp_path, ann)
    kept = read_pubtator(p)
    assert [m.gold_ids for m in kept] == [("D001943", "D010051"), ("D020388",)]
    split = read_pubtator(p, composite="split")
    assert [(m.surface, m.gold_ids) for m in split[:2]] == [
        ("breast cancers", ("D001943",)),
        ("ovarian cancers", ("D010051",)),
    ]
    assert split.report.split == 1 and len(split) == 3
    dropped = read_pubtator(p, composite="drop")
    assert [m.surface for m in dropped] == ["DMD"] and dropped.report.dropped_composite == 1
    with pytest.raises(ValueError):
        read_pubtator(p, composite="nope")


def test_pubtator_trailing_whitespace_mismatch_allowed(tmp_path: Path) -> None:
    i = TEXT.index("DMD)")
    p = _pubtator(tmp_path, [f"111\t{i}\t{i + 3}\tDMD  \tDisease\tD020388"])
    (m,) = read_pubtator(p)
    assert m.surface == "DMD"
    j = TEXT.index("too.")
    p = _pubtator(tmp_path, [f"111\t{j}\t{j + 4}\ttoo \tDisease\tD1"])  # text has "too.": not ok
    with pytest.raises(CorpusFormatError):
        read_pubtator(p)


def test_pubtator_offset_mismatch_names_file_and_line(tmp_path: Path) -> None:
    p = _pubtator(tmp_path, [f"111\t{_span('DMD')}\tDisease\tD1", "111\t0\t8\tDuchenne muscular\tDisease\tD2"])
    with pytest.raises(CorpusFormatError) as err:
        read_pubtator(p)
    assert str(p) in str(err.value) and ":4:" in str(err.value)
    assert err.value.line == 4


@pytest.mark.parametrize(
    "bad_line",
    [
        "111\t0\t3\tDuc\tDisease",  # 5 columns
        "111\tx\t3\tDuc\tDisease\tD1",  # offset not an integer
        "111\t0\t9999\tDuc\tDisease\tD1",  # offset outside text
        "999\t0\t3\tDuc\tDisease\tD1",  # wrong PMID
        "just some junk",
    ],
)
def test_pubtator_malformed_line(tmp_path: Path, bad_line: str) -> None:
    p = _pubtator(tmp_path, [f"111\t{_span('DMD')}\tDisease\tD1", bad_line])
    with pytest.raises(CorpusFormatError, match=r"corpus\.txt:4:"):
        read_pubtator(p)
    assert issubclass(CorpusFormatError, ValueError)


def test_pubtator_annotation_before_title(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("111\t0\t3\tDuc\tDisease\tD1\n")
    with pytest.raises(CorpusFormatError, match=r"x\.txt:1:"):
        read_pubtator(p)


def _biosyn_dir(tmp_path: Path) -> Path:
    d = tmp_path / "processed"
    d.mkdir()
    (d / "111.concept").write_text(
        "\n".join(
            [
                "111||0|27||SpecificDisease||duchenne muscular dystrophy||MESH:D020388",
                "111||40|66||CompositeMention||breast cancers|ovarian cancers||D001943|D010051",
                "111||70|90||CompositeMention||spinocerebellar ataxias 1 and 2||OMIM:164400|183090",
                "111||100|133||DiseaseClass||x-linked immunodeficiency disease||D007153+D040181",
                "111||140|150||DiseaseClass||clonal malignancy|| D007945",
            ]
        )
        + "\n"
    )
    (d / "222.concept").write_text("222||0|5||Modifier||thing||-1\n")
    (d / "notes.txt").write_text("ignored")
    return d


def test_biosyn_dir(tmp_path: Path) -> None:
    ml = read_biosyn_dir(_biosyn_dir(tmp_path))
    assert [(m.doc_id, m.surface, m.gold_ids) for m in ml] == [
        ("111", "duchenne muscular dystrophy", ("D020388",)),
        ("111", "breast cancers", ("D001943",)),
        ("111", "ovarian cancers", ("D010051",)),
        ("111", "spinocerebellar ataxias 1 and 2", ("164400", "183090")),
        ("111", "x-linked immunodeficiency disease", ("D007153", "D040181")),
        ("111", "clonal malignancy", ("D007945",)),
    ]
    assert all(m.start == 0 and m.end == len(m.text) for m in ml)  # bare
    assert [ml.is_conjunct(m) for m in ml] == [False] * 4 + [True, False]
    r = ml.report
    assert (r.records, r.mentions, r.split, r.skipped_unnormalisable) == (6, 6, 1, 1)
    assert read_corpus(tmp_path / "processed").report.format == "biosyn"


def test_biosyn_malformed(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "1.concept").write_text("1||0|3||Disease||abc||D1\n1||0|3||abc||D1\n")
    with pytest.raises(CorpusFormatError, match=r"1\.concept:2:"):
        read_biosyn_dir(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        read_biosyn_dir(empty)


def test_askapatient(tmp_path: Path) -> None:
    p = tmp_path / "AskAPatient.fold-0.test.txt"
    p.write_bytes(
        b"108367008\tDislocation of joint\tdislocating\n"
        b"\n"
        b"3384011000036100\tArthrotec\tArthrotec caf\xe9\n"  # latin-1 byte
    )
    ml = read_askapatient(p)
    assert [(m.surface, m.gold_ids, m.start) for m in ml] == [
        ("dislocating", ("108367008",), 0),
        ("Arthrotec caf\u00e9", ("3384011000036100",), 0),
    ]
    assert read_corpus(p).report.format == "askapatient"
    bad = tmp_path / "bad.txt"
    bad.write_text("1\tname\tmention\n2\tonly two\n")
    with pytest.raises(CorpusFormatError, match=r"bad\.txt:2:"):
        read_askapatient(bad)


def test_docbin(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy")
    from spacy.tokens import DocBin, Span

    nlp = spacy.blank("en")
    doc = nlp("Breast and ovarian cancers and DMD and X-linked disease and cancer here")
    doc.ents = [
        Span(doc, 0, 4, label="DISEASE", kb_id="D001943|D010051"),
        Span(doc, 5, 6, label="DISEASE", kb_id="MESH:D020388"),
        Span(doc, 7, 11, label="DISEASE", kb_id="D007153+D040181"),
        Span(doc, 12, 13, label="DISEASE"),  # no kb id -> skipped
    ]
    doc.user_data["doc_id"] = "pmid1"
    path = tmp_path / "train.spacy"
    DocBin(docs=[doc], store_user_data=True).to_disk(path)
    ml = read_docbin(path)
    assert [(m.doc_id, m.surface, m.gold_ids) for m in ml] == [
        ("pmid1", "Breast and ovarian cancers", ("D001943", "D010051")),
        ("pmid1", "DMD", ("D020388",)),
        ("pmid1", "X-linked disease", ("D007153", "D040181")),
    ]
    assert ml.is_conjunct(ml[2]) and not ml.is_conjunct(ml[0])
    assert ml.report.skipped_no_kb_id == 1
    assert read_corpus(path, nlp=nlp).report.format == "docbin"


def test_read_corpus_dispatch(tmp_path: Path) -> None:
    p = _pubtator(tmp_path, [f"111\t{_span('DMD')}\tDisease\tD1"])
    assert read_corpus(p).report.format == "pubtator"
    assert len(read_corpus(p, format="pubtator")) == 1
    with pytest.raises(ValueError):
        read_corpus(p, format="xml")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(ValueError):
        read_corpus(junk)


_BOYS = TEXT.index("Boys with DMD")


def test_preprocess_lowercase_and_abbreviations(tmp_path: Path) -> None:
    p = _pubtator(
        tmp_path,
        [
            f"111\t{_BOYS + 10}\t{_BOYS + 13}\tDMD\tDisease\tD020388",  # the second DMD
            f"111\t{_span('X-linked immunodeficiency disease')}\tDiseaseClass\tD007153+D040181",
        ],
    )
    ml = read_pubtator(p)
    out, rep = preprocess(ml)
    assert out[0].surface == "duchenne muscular dystrophy"
    assert out[0].text.startswith("duchenne muscular dystrophy (dmd)")  # context kept, lowercased
    assert mention_context(out[0], 2) == ("boys with", "duchenne muscular dystrophy", ". x-linked")
    assert out.is_conjunct(out[1])
    assert rep.abbreviations_expanded == 1 and rep.kept == 2 and rep.input == 2
    raw, _ = preprocess(ml, lowercase=False, expand_abbreviations=False)
    assert [m.surface for m in raw] == ["DMD", "X-linked immunodeficiency disease"]


def test_preprocess_kb_filter() -> None:
    ms = [
        Mention.bare("breast and ovarian cancers", ("D001943", "D010051")),
        Mention.bare("unknown thing", ("D999999",)),
        Mention.bare("no ids"),
        Mention.bare("DMD", ("D020388",)),
    ]
    kb = {"D001943", "D020388"}
    out, rep = preprocess(ms, kb=kb)
    assert [(m.surface, m.gold_ids) for m in out] == [
        ("breast and ovarian cancers", ("D001943",)),
        ("dmd", ("D020388",)),
    ]
    assert rep.dropped == {"not_in_kb": 1, "no_gold_id": 1}
    assert rep.ids_removed_not_in_kb == 1
    d = rep.to_dict()
    assert d["kept"] == 2 and d["input"] == 4


def test_mention_context() -> None:
    m = Mention("d", "one two  three MENTION four five six", 15, 22)
    assert m.surface == "MENTION"
    assert mention_context(m, 2) == ("two three", "MENTION", "four five")
    assert mention_context(m, 10) == ("one two three", "MENTION", "four five six")
    assert mention_context(m, 0) == ("", "MENTION", "")
    assert mention_context(Mention.bare("x"), 3) == ("", "x", "")
    with pytest.raises(ValueError):
        mention_context(m, -1)


# --------------------------------------------------------------------------- real files
@pytest.mark.parametrize(
    "split,count",
    [("test", 960), ("develop", 787), ("train", 5145)],
)
def test_real_ncbi_counts(split: str, count: int, shared_data) -> None:
    path = shared_data.need(f"ncbi-disease/NCBI{split}set_corpus.txt")
    ml = read_pubtator(path)
    assert len(ml) == count
    assert all(m.gold_ids and m.surface == m.surface.strip() for m in ml)
    assert not any(i.upper().startswith(("MESH:", "OMIM:")) or " " in i for m in ml for i in m.gold_ids)


def test_real_ncbi_conjuncts_and_composites(shared_data) -> None:
    path = shared_data.need("ncbi-disease/NCBItrainset_corpus.txt")
    ml = read_pubtator(path)
    assert ml.report.documents == 593
    assert ml.report.conjunct == len(ml.conjunct) > 0
    assert ml.report.trailing_space_fixed == 1


def test_real_biosyn_test(shared_data) -> None:
    path = shared_data.need("biosyn/ncbi-disease/processed_test")
    ml = read_biosyn_dir(path)
    assert ml.report.records == 960  # 960 annotated mentions; resolved composites split into parts
    assert ml.report.split == 8 and len(ml) == 972  # 5 two-part, 2 three-part, 1 four-part
    assert ml.report.documents == 100
    assert all(m.surface == m.surface.lower() for m in ml)


def test_corpus_ids_use_the_kb_rule() -> None:
    from spacy_angel.kb import normalize
    from training.data import corpora

    assert corpora.normalize_id is normalize.normalize_id  # one rule for gold ids and KB ids

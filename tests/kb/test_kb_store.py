"""Tests for spacy_angel.kb.store: normalisation, every loader, persistence and error messages."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import broken_artefact_faults
from spacy_angel.kb.readers import load_files
from spacy_angel.errors import KBFormatError
from spacy_angel.kb.readers import detect_format
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.kb_build import build_kb
from spacy_angel.kb.normalize import normalize_id, normalize_name



def write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("MESH:D001943", "D001943"),
        ("MeSH:D001943", "D001943"),
        ("mesh:D001943", "D001943"),
        (" D001943", "D001943"),
        ("D001943", "D001943"),
        ("OMIM:215600", "215600"),
        ("215600 ", "215600"),
        ("HP:0001250", "HP:0001250"),
        ("DOID:1234", "DOID:1234"),
        ("C0011849", "C0011849"),
        ("22298006", "22298006"),
    ],
)
def test_normalize_id(raw: str, expected: str) -> None:
    assert normalize_id(raw) == expected


def test_normalize_name() -> None:
    assert normalize_name("  Breast\t\u00a0 Cancer\n") == "breast cancer"
    assert normalize_name("Breast  Cancer", lowercase=False) == "Breast Cancer"
    assert normalize_name("\ufb01brosis") == "fibrosis"  # NFKC ligature
    assert normalize_name("   ") == ""


# --------------------------------------------------------------------------- core KB behaviour


def test_add_and_lookups() -> None:
    kb = KnowledgeBase()
    kb.add("MESH:D001943", "Breast Neoplasms", definition="Tumors of the breast.", semantic_types=["T191"])
    kb.add("D001943", "Breast  Cancer")
    kb.add("OMIM:114480", "breast cancer")  # shared name
    kb.add("D001943", "")  # ignored
    assert len(kb) == 2 and kb.num_names == 2
    assert kb.names == ["breast neoplasms", "breast cancer"]
    assert kb.ids_for("BREAST CANCER") == ("D001943", "114480")
    assert kb.ids_for_index(kb.name_index("breast neoplasms")) == ("D001943",)
    assert kb.ids_for("unknown") == () and kb.name_index("unknown") is None
    assert kb.preferred_name("mesh:D001943") == "Breast Neoplasms"
    assert kb.definition("D001943") == "Tumors of the breast."
    assert kb.semantic_types("D001943") == ("T191",)
    assert kb.names_for(" D001943") == ("breast neoplasms", "breast cancer")
    assert "OMIM:114480" in kb and "114480" in kb and "X" not in kb and 5 not in kb
    assert list(kb) == [("D001943", "breast neoplasms"), ("D001943", "breast cancer"), ("114480", "breast cancer")]
    # preferred=True overrides the first name, and the first explicit preferred wins
    kb.add("D001943", "Mammary Cancer", preferred=True)
    kb.add("D001943", "Other", preferred=True)
    assert kb.preferred_name("D001943") == "Mammary Cancer"
    assert kb.ids_for("other") == ("D001943",)  # adding after a lookup still works


def test_alias_ids() -> None:
    kb = KnowledgeBase()
    kb.add("D001943", "breast neoplasms")
    kb.add_alias_ids("MESH:D001943", ["OMIM:114480", "114480", ""])
    kb.add("C000001", "other")
    kb.add_alias_ids("C000001", ["114480"])  # already bound elsewhere: first binding kept
    for q in ("MESH:D001943", "D001943", "OMIM:114480", "114480"):
        assert q in kb
        assert kb.canonical_id(q) == "D001943"
        assert kb.names_for(q) == ("breast neoplasms",)
    assert kb.all_ids("114480") == ("D001943", "114480")
    assert kb.concept_ids == ["D001943", "C000001"] and len(kb) == 2
    assert kb.canonical_id("nope") is None and kb.all_ids("nope") == ()


def test_keep_case() -> None:
    kb = KnowledgeBase(lowercase=False)
    kb.add("1", "ALS")
    kb.add("2", "als")
    assert kb.names == ["ALS", "als"]
    assert kb.ids_for("ALS") == ("1",) and kb.ids_for("als") == ("2",)
    assert KnowledgeBase(lowercase=True).fingerprint() != KnowledgeBase(lowercase=False).fingerprint()


# --------------------------------------------------------------------------- loaders


def test_tsv_and_gz(tmp_path: Path) -> None:
    text = "# comment\n\nMESH:D001943\tBreast Neoplasms\tTumors of the breast.\nD001943\tbreast cancer\nOMIM:215600\tCirrhosis, Familial\n"
    for name in ("kb.tsv", "kb.tsv.gz"):
        p = write(tmp_path / name, text)
        assert detect_format(p) == "tsv"
        kb = load_files([p])
        assert len(kb) == 2 and kb.num_names == 3
        assert kb.definition("D001943") == "Tumors of the breast."
        assert kb.ids_for("cirrhosis, familial") == ("215600",)
        assert kb.canonical_id("OMIM:215600") == "215600"


@pytest.mark.parametrize(
    "line,field",
    [("D001\n", "name"), ("\tname\n", "id"), ("D001\t \n", "name")],
)
def test_tsv_malformed_line(tmp_path: Path, line: str, field: str) -> None:
    p = write(tmp_path / "bad.tsv", "D000\tok\n# c\n" + line)
    with pytest.raises(KBFormatError) as ei:
        load_files([p], format="tsv")
    msg = str(ei.value)
    assert "bad.tsv:3" in msg and field in msg
    assert ei.value.line == 3 and ei.value.field == field


def test_biosyn(tmp_path: Path) -> None:
    p = write(
        tmp_path / "dict.txt",
        "C567755|613097||tooth agenesis selective 6\n"
        "C567755|613097||sthag6\n"
        " D001943||breast cancer\n"
        "114480|D001943||breast neoplasms\n"  # joins the D001943 concept
        "D001943||breast cancer\n",
    )
    assert detect_format(p) == "biosyn"
    kb = load_files([p])
    assert len(kb) == 2
    assert kb.canonical_id("OMIM:613097") == "C567755"
    assert kb.names_for("613097") == ("tooth agenesis selective 6", "sthag6")
    assert kb.preferred_name("613097") == "tooth agenesis selective 6"
    assert kb.canonical_id("114480") == "D001943"
    assert kb.ids_for("breast neoplasms") == ("D001943",)


def test_biosyn_missing_separator(tmp_path: Path) -> None:
    p = write(tmp_path / "dict.txt", "D1||a\nD2|b\n")
    with pytest.raises(KBFormatError, match=r"dict\.txt:2"):
        load_files([p], format="biosyn")


def test_medic_biosyn_style(tmp_path: Path) -> None:
    p = write(
        tmp_path / "medic_06Jul2012.txt",
        "C565588||Epidermolysis Bullosa With Diaphragmatic Hernia\n"
        "114480|D001943||Breast Neoplasms|Breast Cancer|BREAST CANCER, FAMILIAL\n",
    )
    for fmt in ("auto", "medic", "biosyn"):
        kb = load_files([p], format=fmt)
        assert len(kb) == 2
        for q in ("MESH:D001943", "D001943", "OMIM:114480", "114480"):
            assert kb.canonical_id(q) == "114480"
        assert kb.preferred_name("D001943") == "Breast Neoplasms"
        assert kb.names_for("D001943") == ("breast neoplasms", "breast cancer", "breast cancer, familial")


MEDIC_TSV = (
    "# CTD header\n"
    "# Fields:\n"
    "# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\tParentTreeNumbers\tSynonyms\tSlimMappings\n"
    "#\n"
    "Breast Neoplasms\tMESH:D001943\tOMIM:114480|DO:DOID:1612\tTumors or cancer of the human BREAST.\tMESH:D001941\tC04.588.180\tC04.588\tBreast Cancer|Tumors, Breast\tCancer\n"
    "Cirrhosis, Familial\tOMIM:215600\t\t\tMESH:D008103\t\t\tCIRRHOSIS, CRYPTOGENIC\t\n"
    "Breast Tumor Other\tMESH:C000002\tOMIM:114480\t\t\t\t\tbreast cancer\t\n"
)


def test_medic_tsv(tmp_path: Path) -> None:
    p = write(tmp_path / "CTD_diseases.tsv.gz", MEDIC_TSV)
    assert detect_format(p) == "medic"
    kb = load_files([p])
    assert len(kb) == 3
    for q in ("MESH:D001943", "D001943", "OMIM:114480", "114480", "DOID:1612"):
        assert kb.canonical_id(q) == "D001943"
    for q in ("OMIM:215600", "215600"):
        assert kb.canonical_id(q) == "215600"
    assert kb.preferred_name("D001943") == "Breast Neoplasms"
    assert kb.definition("D001943") == "Tumors or cancer of the human BREAST."
    assert kb.definition("215600") is None
    assert set(kb.names_for("D001943")) == {"breast neoplasms", "breast cancer", "tumors, breast"}
    assert kb.ids_for("Breast Cancer") == ("D001943", "C000002")  # shared name -> both


def test_medic_headerless_detected_by_columns(tmp_path: Path) -> None:
    body = "".join(l + "\n" for l in MEDIC_TSV.splitlines() if not l.startswith("#"))
    p = write(tmp_path / "diseases.tsv", body)
    assert detect_format(p) == "medic"


OBO = r"""format-version: 1.2
ontology: test

[Term]
id: HP:0001250
name: Seizure
alt_id: HP:0002279
def: "An intermittent \"abnormality\" of nervous system." [HPO:probinson]
synonym: "Epileptic seizure" EXACT []
synonym: "Seizures" RELATED [HPO:x]
synonym: "Fit \"attack\"" BROAD []
is_a: HP:0012638 ! Abnormal nervous system physiology

[Term]
id: HP:0000001
name: Obsolete thing
synonym: "old seizure" EXACT []
is_obsolete: true

[Typedef]
id: part_of
name: part of

[Term]
id: HP:0000118
name: Phenotypic abnormality
"""


def test_obo(tmp_path: Path) -> None:
    for name in ("hp.obo", "hp.obo.gz", "ontology.txt"):
        p = write(tmp_path / name, OBO)
        assert detect_format(p) == "obo"
        kb = load_files([p])
        assert kb.concept_ids == ["HP:0001250", "HP:0000118"]
        assert "HP:0000001" not in kb and kb.ids_for("old seizure") == () and kb.ids_for("part of") == ()
        assert kb.canonical_id("HP:0002279") == "HP:0001250"
        assert kb.preferred_name("HP:0001250") == "Seizure"
        assert kb.definition("HP:0001250") == 'An intermittent "abnormality" of nervous system.'
        assert kb.ids_for('fit "attack"') == ("HP:0001250",)
        assert set(kb.names_for("HP:0001250")) == {"seizure", "epileptic seizure", "seizures", 'fit "attack"'}
    kb = load_files([p], synonym_scopes=["EXACT"])
    assert set(kb.names_for("HP:0001250")) == {"seizure", "epileptic seizure"}


def _rrf(rows: list) -> str:
    return "".join("|".join(r) + "|\n" for r in rows)


def _conso(cui: str, lat: str, ts: str, stt: str, ispref: str, sab: str, name: str, sup: str = "N") -> list:
    # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF
    return [cui, lat, ts, "L1", stt, "S1", ispref, "A1", "", "", "", sab, "PT", "X", name, "0", sup, ""]


def _umls(tmp_path: Path) -> Path:
    d = tmp_path / "META"
    d.mkdir()
    write(
        d / "MRCONSO.RRF",
        _rrf([
            _conso("C0011849", "ENG", "S", "VO", "N", "MSH", "diabetes"),
            _conso("C0011849", "ENG", "P", "PF", "Y", "MSH", "Diabetes Mellitus"),
            _conso("C0011849", "ENG", "P", "PF", "Y", "SNOMEDCT_US", "Diabetes mellitus (disorder)"),
            _conso("C0011849", "FRE", "P", "PF", "Y", "MSHFRE", "Diabète"),
            _conso("C0011849", "ENG", "S", "PF", "N", "MSH", "old diabetes name", sup="O"),
            _conso("C0011849", "ENG", "S", "PF", "N", "MSH", "suppressible name", sup="Y"),
            _conso("C0000001", "ENG", "P", "PF", "Y", "SNOMEDCT_US", "Aspirin"),
        ]),
    )
    write(d / "MRSTY.RRF", _rrf([["C0011849", "T047", "B2.2.1.2.1", "Disease or Syndrome", "AT1", ""],
                                 ["C0000001", "T121", "A1.4.1.1.1", "Pharmacologic Substance", "AT2", ""]]))
    write(d / "MRDEF.RRF", _rrf([["C0011849", "A1", "AT3", "", "MSH", "A metabolic disease.", "N", ""],
                                 ["C0011849", "A2", "AT4", "", "NCI", "Second def.", "N", ""]]))
    return d


def test_umls(tmp_path: Path) -> None:
    d = _umls(tmp_path)
    conso = d / "MRCONSO.RRF"
    assert detect_format(conso) == "umls"
    kb = load_files([conso])
    assert len(kb) == 2
    assert kb.preferred_name("C0011849") == "Diabetes Mellitus"  # first TS=P, STT=PF, ISPREF=Y row
    assert set(kb.names_for("C0011849")) == {"diabetes", "diabetes mellitus", "diabetes mellitus (disorder)"}
    assert kb.ids_for("old diabetes name") == () and kb.ids_for("suppressible name") == ()
    assert kb.definition("C0011849") == "A metabolic disease."
    assert kb.semantic_types("C0011849") == ("T047",)
    # language filter
    kb = load_files([conso], languages=None)
    assert kb.ids_for("diabète") == ("C0011849",)
    # source filter
    kb = load_files([conso], sources=["MSH"])
    assert kb.concept_ids == ["C0011849"] and kb.ids_for("diabetes mellitus (disorder)") == ()
    # semantic type filter, by TUI or by name
    for st in (["T121"], ["Pharmacologic Substance"]):
        kb = load_files([conso], semantic_types=st, mrsty=d / "MRSTY.RRF")
        assert kb.concept_ids == ["C0000001"]
    # all rows filtered away -> empty KB error
    with pytest.raises(KBFormatError, match="no names found"):
        load_files([conso], sources=["NOPE"])


def test_umls_bad_field_count(tmp_path: Path) -> None:
    d = _umls(tmp_path)
    with open(d / "MRCONSO.RRF", "a", encoding="utf-8") as fh:
        fh.write("C1|ENG|P|too few|\n")
    with pytest.raises(KBFormatError, match=r"MRCONSO\.RRF:8"):
        load_files([d / "MRCONSO.RRF"])


def test_json(tmp_path: Path) -> None:
    p = write(tmp_path / "onto.json.gz", json.dumps({
        "C567755|613097": [["primary", "tooth agenesis selective 6"], ["synonym/secondary", "sthag6"]],
        "D001943": [["synonym/secondary", "breast cancer"], ["primary", "breast neoplasms"]],
    }))
    assert detect_format(p) == "json"
    kb = load_files([p])
    assert kb.canonical_id("613097") == "C567755"
    assert kb.preferred_name("D001943") == "breast neoplasms"
    p2 = write(tmp_path / "plain.txt", '{"X1": ["Foo", "Bar"]}')
    assert detect_format(p2) == "json"
    kb = load_files([p2])
    assert kb.names_for("X1") == ("foo", "bar") and kb.preferred_name("X1") == "Foo"


def test_multiple_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.tsv", "D1\tfoo\n")
    b = write(tmp_path / "b.txt", "D1|OMIM:5||bar\n")
    kb = load_files([a, b])
    assert len(kb) == 1 and kb.names_for("5") == ("foo", "bar")


# --------------------------------------------------------------------------- errors


def test_unknown_format(tmp_path: Path) -> None:
    p = write(tmp_path / "mystery.dat", "just some words\n")
    with pytest.raises(KBFormatError) as ei:
        detect_format(p)
    assert "mystery.dat" in str(ei.value) and "biosyn" in str(ei.value) and "umls" in str(ei.value)
    with pytest.raises(KBFormatError, match="mystery.dat"):
        load_files([p])
    with pytest.raises(KBFormatError, match="unknown format"):
        load_files([p], format="xml")


def test_empty_kb(tmp_path: Path) -> None:
    p = write(tmp_path / "empty.tsv", "# only a comment\n\n")
    with pytest.raises(KBFormatError, match=r"no names found in .*empty\.tsv"):
        load_files([p], format="tsv")


# --------------------------------------------------------------------------- persistence


def test_round_trip(tmp_path: Path) -> None:
    kb = load_files([write(tmp_path / "CTD_diseases.tsv", MEDIC_TSV)])
    kb.add("HP:1", "Seizure", definition="d", semantic_types=["T1", "T2"])
    out = tmp_path / "kb"
    kb.to_disk(out)
    assert sorted(x.name for x in out.iterdir()) == [
        "concepts.jsonl", "kb.json", "kb.safetensors", "name_concepts.npy", "name_ptr.npy", "names.txt"]
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]  # no temp dirs left
    meta = json.loads((out / "kb.json").read_text())
    assert meta["fingerprint"] == kb.fingerprint() and meta["num_names"] == kb.num_names
    kb2 = KnowledgeBase.from_disk(out)
    assert kb2.fingerprint() == kb.fingerprint() and kb2.lowercase == kb.lowercase
    assert kb2.names == kb.names and kb2.concept_ids == kb.concept_ids and list(kb2) == list(kb)
    for cid in kb.concept_ids:
        for get in ("all_ids", "preferred_name", "definition", "semantic_types", "names_for"):
            assert getattr(kb2, get)(cid) == getattr(kb, get)(cid)
    for i in range(kb.num_names):
        assert kb2.ids_for_index(i) == kb.ids_for_index(i)
    assert kb2.canonical_id("OMIM:114480") == "D001943"
    # overwrite an existing KB directory atomically; a loaded KB can still grow
    kb2.add("NEW", "new name")
    kb2.to_disk(out)
    kb3 = KnowledgeBase.from_disk(out)
    assert kb3.ids_for("new name") == ("NEW",) and len(kb3) == len(kb) + 1
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]


def test_round_trip_keep_case_and_build_kb(tmp_path: Path) -> None:
    src = write(tmp_path / "k.tsv", "1\tALS\n2\tals\n")
    kb = build_kb([src], tmp_path / "out", lowercase=False)
    kb2 = KnowledgeBase.from_disk(tmp_path / "out")
    assert kb2.lowercase is False and kb2.names == ["ALS", "als"] and kb2.fingerprint() == kb.fingerprint()


def test_from_disk_errors(tmp_path: Path) -> None:
    """The text files, read into memory (mmap=False, or a folder without kb.safetensors)."""
    with pytest.raises(FileNotFoundError):
        KnowledgeBase.from_disk(tmp_path / "nope")
    kb = KnowledgeBase()
    kb.add("1", "a")
    out = tmp_path / "kb"
    kb.to_disk(out)
    (out / "names.txt").write_text("a\nb\n")
    with pytest.raises(KBFormatError, match="names.txt"):
        KnowledgeBase.from_disk(out, mmap=False)
    kb.to_disk(out)
    (out / "kb.json").write_text("{not json")
    with pytest.raises(KBFormatError, match="kb.json"):
        KnowledgeBase.from_disk(out)
    kb.to_disk(out)
    np.save(out / "name_concepts.npy", np.array([7], dtype=np.int32))
    with pytest.raises(KBFormatError):
        KnowledgeBase.from_disk(out, mmap=False)
    kb.to_disk(out)
    (out / "concepts.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="concepts.jsonl"):
        KnowledgeBase.from_disk(out)


MAPPED_DAMAGE = {"truncated": "kb.safetensors cut short", "foreign": "kb.safetensors replaced by a foreign file",
                 "names-edited": "names.txt edited after the save (the mapped tables are stale)",
                 "other-kb": "kb.safetensors of another KB beside this kb.json"}

FAULTS = broken_artefact_faults(MAPPED_DAMAGE, "KnowledgeBase.from_disk (every KB folder load)",
                                "`KBFormatError` `[E180]`/`[E187]` naming kb.safetensors, with a `kb build` hint",
                                "kb/test_kb_store.py::test_a_broken_mapped_kb_file_is_refused_by_name")


@pytest.mark.parametrize("damage", list(MAPPED_DAMAGE))
def test_a_broken_mapped_kb_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    kb = load_files([write(tmp_path / "CTD_diseases.tsv", MEDIC_TSV)])
    out = tmp_path / "kb"
    kb.to_disk(out)
    mapped = out / "kb.safetensors"
    if damage == "truncated":
        mapped.write_bytes(mapped.read_bytes()[:-40])
    elif damage == "foreign":
        mapped.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 64)
    elif damage == "names-edited":
        (out / "names.txt").write_text((out / "names.txt").read_text() + "an added name\n")
    else:  # the arrays of another KB beside this kb.json
        other = KnowledgeBase()
        other.add("X", "something else")
        other.to_disk(tmp_path / "other")
        mapped.write_bytes((tmp_path / "other" / "kb.safetensors").read_bytes())
    with pytest.raises(KBFormatError, match="E180|E187") as err:
        KnowledgeBase.from_disk(out)
    assert "kb.safetensors" in str(err.value)


def test_a_mapped_kb_answers_like_the_one_in_memory_and_grows_by_copying(tmp_path: Path) -> None:
    kb = load_files([write(tmp_path / "CTD_diseases.tsv", MEDIC_TSV)])
    kb.add("HP:1", "Seizure", definition="d", semantic_types=["T1", "T2"])
    kb.add_alias_ids("HP:1", ["HP:01"])
    out = tmp_path / "kb"
    kb.to_disk(out)
    mapped, in_memory = KnowledgeBase.from_disk(out), KnowledgeBase.from_disk(out, mmap=False)
    assert mapped._mapped_from == out and in_memory._mapped_from is None
    assert mapped.names == in_memory.names == kb.names and list(mapped) == list(kb)
    assert list(mapped.concept_ids) == list(kb.concept_ids) and mapped.fingerprint() == kb.fingerprint()
    for cid in list(kb.concept_ids) + ["HP:01", "OMIM:114480", "nope"]:
        for get in ("all_ids", "canonical_id", "preferred_name", "definition", "semantic_types", "names_for"):
            assert getattr(mapped, get)(cid) == getattr(kb, get)(cid), (get, cid)
        assert (cid in mapped) == (cid in kb)
    for name in list(kb.names) + ["Seizure", "not a name", ""]:
        assert mapped.name_index(name) == kb.name_index(name) and mapped.ids_for(name) == kb.ids_for(name)
    mapped.add("NEW", "new name")  # copy on write: the file is untouched, the KB grows in memory
    assert mapped._mapped_from is None and mapped.ids_for("new name") == ("NEW",)
    assert KnowledgeBase.from_disk(out).ids_for("new name") == ()
    mapped.to_disk(out)
    assert KnowledgeBase.from_disk(out).ids_for("new name") == ("NEW",)


# --------------------------------------------------------------------------- real data


def test_real_ctd_medic(shared_data) -> None:
    kb = load_files([shared_data.need("medic/CTD_diseases_2017.tsv.gz")])
    assert len(kb) == 11865
    assert "breast neoplasms" in kb.names_for("D001943")
    assert "D001943" in kb.ids_for("Breast Neoplasms")
    assert kb.canonical_id("MESH:D001943") == "D001943"


def test_name_indices_for_reads_the_concepts_names_in_memory_and_mapped(tmp_path):
    """``name_indices_for`` (the CSR, no look-up per name) gives the indices of ``names_for``, aliases too."""
    kb = KnowledgeBase()
    kb.add("C1", "breast cancer")
    kb.add("C2", "lung cancer")
    kb.add("C1", "Mammary Carcinoma")
    kb.add("C2", "breast cancer")  # a name of two concepts
    kb.add_alias_ids("C1", ["OLD1"])
    kb.to_disk(tmp_path / "kb")
    for store in (kb, KnowledgeBase.from_disk(tmp_path / "kb"), KnowledgeBase.from_disk(tmp_path / "kb", mmap=False)):
        for kb_id in ("C1", "C2", "OLD1"):
            assert [store.names[i] for i in store.name_indices_for(kb_id)] == list(store.names_for(kb_id))
        assert store.name_indices_for("OLD1") == store.name_indices_for("C1") and len(store.name_indices_for("C1")) == 2
        assert store.name_indices_for("NOPE") == ()


@pytest.mark.parametrize("step", [3, 1 << 16])
def test_mapped_strings_iterate_any_range_as_the_list_slices_it(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    from spacy_angel.kb.mapped import MappedStrings, encode_strings

    words = [f"name {i} é" for i in range(11)] + [""]
    strings = MappedStrings(*encode_strings(words))
    monkeypatch.setattr(MappedStrings, "DECODE_STEP", step)
    assert list(strings) == words
    for lo, hi in [(0, 12), (2, 9), (4, 4), (5, 40), (-3, 2), (11, 12)]:
        assert list(strings.iter_range(lo, hi)) == words[max(0, lo):hi]

"""spacy_angel.kb.readers: the LOADERS table, load_kb on directories and files, strict UTF-8,
and ``kb build``'s refusal to replace a directory it did not write."""
from __future__ import annotations

import gzip
import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.errors import KBFormatError
from spacy_angel.kb.store import is_kb_directory
from spacy_angel.kb.readers import FORMATS, LOADERS, detect_format, load_files, load_kb
from spacy_angel.retrieval.kb_build import build_kb

# One tiny source per format; every one defines D1 "breast cancer" so the tests can share asserts.
SOURCES = {
    "tsv": ("kb.tsv", "D1\tBreast Cancer\tA tumour.\nD2\tmigraine\n"),
    "biosyn": ("dict.txt", "D1|OMIM:5||breast cancer|breast carcinoma\nD2||migraine\n"),
    "medic": ("CTD_diseases.tsv", "# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\t"
              "ParentTreeNumbers\tSynonyms\tSlimMappings\nBreast Cancer\tMESH:D1\t\t\t\t\t\tbreast carcinoma\t\n"
              "Migraine\tMESH:D2\t\t\t\t\t\t\t\n"),
    "obo": ("hp.obo", "format-version: 1.2\n\n[Term]\nid: D1\nname: breast cancer\n\n[Term]\nid: D2\nname: migraine\n"),
    "umls": ("MRCONSO.RRF", "".join(
        "|".join([cui, "ENG", "P", "L", "PF", "S", "Y", "A", "", "", "", "MSH", "PT", "X", name, "0", "N", ""]) + "|\n"
        for cui, name in (("D1", "Breast Cancer"), ("D2", "migraine")))),
    "json": ("onto.json", json.dumps({"D1": ["breast cancer"], "D2": ["migraine"]})),
}
TSV = "D001943\tbreast cancer\nD008881\tmigraine\n"
runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args):
    return runner.invoke(get_app(), [str(a) for a in args])


# --------------------------------------------------------------------------- the table


def test_loaders_table_covers_every_format() -> None:
    assert set(FORMATS) == set(LOADERS) == set(SOURCES)
    for name, loader in LOADERS.items():
        params = list(inspect.signature(loader).parameters.values())
        assert [p.name for p in params[:2]] == ["kb", "path"], name
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, f"{name} must ignore other formats' options"


@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_load_kb_on_each_file_format_and_on_a_directory(tmp_path: Path, fmt: str) -> None:
    name, text = SOURCES[fmt]
    src = write(tmp_path / name, text)
    assert detect_format(src) == fmt
    for kb in (load_kb(src), load_kb(src, format=fmt), load_kb([src]), load_files([src])):
        assert kb.ids_for("breast cancer") == ("D1",) and kb.ids_for("migraine") == ("D2",)
    out = tmp_path / "kbdir"
    built = build_kb(src, out)
    again = load_kb(out)
    assert again.fingerprint() == built.fingerprint() and again.ids_for("breast cancer") == ("D1",)
    assert is_kb_directory(out)


def test_load_kb_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_kb(tmp_path / "nowhere")
    out = tmp_path / "kbdir"
    build_kb(write(tmp_path / "kb.tsv", TSV), out)
    with pytest.raises(ValueError, match="KB directory"):
        load_kb(out, format="tsv")
    with pytest.raises(FileNotFoundError, match="kb.json"):
        load_kb(tmp_path)  # a directory, but not a KB
    with pytest.raises(KBFormatError, match="unknown format 'xml'"):
        load_kb(tmp_path / "kb.tsv", format="xml")


# --------------------------------------------------------------------------- strict UTF-8


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_file_line_and_byte_offset(tmp_path: Path, gz: bool) -> None:
    data = "D1\tbreast cancer\nD2\tcaf\u00e9\n".encode("utf-8") + b"D3\tbad \xff name\n"
    path = tmp_path / ("kb.tsv.gz" if gz else "kb.tsv")
    path.write_bytes(gzip.compress(data) if gz else data)
    offset = data.index(b"\xff")
    with pytest.raises(KBFormatError) as err:
        load_kb(path, format="tsv")
    message = str(err.value)
    assert f"{path}:3:" in message and "invalid UTF-8" in message and f"byte offset {offset}" in message
    assert err.value.line == 3
    with pytest.raises(KBFormatError, match=f"byte offset {offset}"):
        detect_format(path)  # detection reads the same lines
    bad_json = tmp_path / "x.json"
    bad_json.write_bytes(b'{"D1": ["ok"],\n "D2": ["\xc3("]}\n')
    offset = bad_json.read_bytes().index(b"\xc3")
    with pytest.raises(KBFormatError, match=rf"x\.json:2: \[E111\] invalid UTF-8.*byte offset {offset}\b"):
        load_kb(bad_json)


# --------------------------------------------------------------------------- kb build output safety


def test_kb_build_refuses_a_foreign_directory_and_keeps_its_files(tmp_path: Path) -> None:
    src = write(tmp_path / "good.tsv", TSV)
    out = tmp_path / "out"
    out.mkdir()
    user_file = write(out / "notes.txt", "my notes")
    result = invoke("kb", "build", src, "--output", out)
    assert result.exit_code == 1
    assert "not a KB directory" in result.output and "notes.txt" in result.output and "--overwrite" in result.output
    assert user_file.read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(FileExistsError):
        build_kb(src, out)
    with pytest.raises(FileExistsError):
        load_files(src).to_disk(out)
    assert user_file.read_text() == "my notes"
    # --overwrite replaces the directory with the KB
    result = invoke("kb", "build", src, "--output", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not user_file.exists() and load_kb(out).ids_for("migraine") == ("D008881",)


def test_kb_build_replaces_its_own_kb_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("kb", "build", write(tmp_path / "a.tsv", TSV), "--output", out).exit_code == 0
    assert {"kb.json", "tfidf.json", "tfidf.safetensors"} <= {p.name for p in out.iterdir()}  # the index is written too
    result = invoke("kb", "build", write(tmp_path / "b.tsv", "X1\theadache\n"), "--output", out)
    assert result.exit_code == 0, result.output
    assert load_kb(out).concept_ids == ["X1"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    # a failed build leaves the previous KB untouched
    result = invoke("kb", "build", write(tmp_path / "bad.tsv", "X2\n"), "--output", out, "--format", "tsv")
    assert result.exit_code == 1 and "bad.tsv:1" in result.output
    assert load_kb(out).concept_ids == ["X1"]
    # an empty existing directory and a missing one are fine; a file is not
    (tmp_path / "empty").mkdir()
    assert invoke("kb", "build", tmp_path / "a.tsv", "--output", tmp_path / "empty", "--no-index").exit_code == 0
    assert not (tmp_path / "empty" / "tfidf.json").exists()
    result = invoke("kb", "build", tmp_path / "a.tsv", "--output", tmp_path / "a.tsv")
    assert result.exit_code == 1 and "not a directory" in result.output


def test_kb_directory_detection(tmp_path: Path) -> None:
    out = tmp_path / "kb"
    build_kb(write(tmp_path / "a.tsv", TSV), out, index=True)
    assert is_kb_directory(out)
    (out / "kb.json").write_text("{broken")
    assert is_kb_directory(out)  # a damaged save of ours may be replaced
    write(out / "README.md", "user file")
    assert not is_kb_directory(out)
    assert not is_kb_directory(tmp_path)

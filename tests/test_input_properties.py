"""Property tests: any bytes, and any small edit of a valid file, either load or fail as the project says.

Why properties: the tables in test_kb_sources.py / test_bad_inputs.py hold the mistakes someone
thought of; hypothesis makes up the rest (a byte flipped in a gzip stream, a tab lost, a stray
quote). For every KB loader and every corpus reader, the only allowed outcomes are a valid result
or the project's own error (:class:`KBFormatError` / :class:`CorpusFormatError`) naming the file
and, where the fault sits on a line, that line: never another exception, and for ``kb build`` never
a partial output directory. Bounded (``max_examples`` 30-40 per test) so the module stays well
under a minute on two shared cores.
"""
from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spacy_angel.errors import KBFormatError
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.kb.readers import LOADERS, load_files
from spacy_angel.errors import CorpusFormatError
from training.data.records import MentionList
from training.data.corpora import read_askapatient, read_biosyn_dir, read_pubtator

SETTINGS = settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

MEDIC_HEADER = (
    "# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\tParentTreeNumbers\tSynonyms\tSlimMappings\n"
)
#: format -> (file name, a valid file of that format)
KB_FILES: Dict[str, Tuple[str, bytes]] = {
    "tsv": ("kb.tsv", b"D1\tBreast Cancer\tA tumour.\nD2\tmigraine\n# a comment\nD3\thigh blood pressure\n"),
    "biosyn": ("dict.txt", b"D1|OMIM:5||breast cancer|breast carcinoma\nD2||migraine\n"),
    "medic": ("CTD_diseases.tsv", (MEDIC_HEADER + "Breast Cancer\tMESH:D1\tOMIM:5\tA tumour.\t\t\t\tbreast carcinoma|mammary cancer\t\n"
                                   "Migraine\tMESH:D2\t\t\t\t\t\t\t\n").encode()),
    "obo": ("hp.obo", b'format-version: 1.2\n\n[Term]\nid: HP:1\nname: seizure\nsynonym: "fits" EXACT []\n'
                      b'def: "A fit." [PMID:1]\nalt_id: HP:9\n\n[Term]\nid: HP:2\nname: gone\nis_obsolete: true\n'),
    "umls": ("MRCONSO.RRF", "".join(
        "|".join([cui, "ENG", "P", "L", "PF", "S", "Y", "A", "", "", "", "MSH", "PT", "X", name, "0", "N", ""]) + "|\n"
        for cui, name in (("C1", "Breast Cancer"), ("C1", "breast carcinoma"), ("C2", "migraine"))).encode()),
    "json": ("onto.json", json.dumps({"D1": ["breast cancer", ["primary", "mammary cancer"]], "D2|D3": ["migraine"]},
                                     indent=1).encode()),
}
#: errors about a whole file rather than one of its lines (the file is still named)
FILE_LEVEL = ("no names found", "the file is empty", "cannot detect the KB format", "nested too deeply")


def small_edits(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with 1-3 edits: a byte replaced, bytes inserted, or a slice deleted (a tab, a newline, a quote ...)."""
    interesting = st.sampled_from([b"\t", b"\n", b"|", b"||", b'"', b"\xff", b"\r", b"\x00", b"[", b":", b""])
    edit = st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.floats(0, 1), st.integers(1, 4),
                     st.one_of(interesting, st.binary(min_size=1, max_size=3)))

    def apply(edits: List[tuple]) -> bytes:
        data = bytearray(valid)
        for kind, where, length, payload in edits:
            at = min(int(where * len(data)), max(len(data) - 1, 0))
            if kind == "replace" and data:
                data[at : at + 1] = payload
            elif kind == "insert":
                data[at:at] = payload
            else:
                del data[at : at + length]
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=3).map(apply)


def check_kb_outcome(load: Callable[[], KnowledgeBase], path: Path) -> None:
    """A usable KB, or a KBFormatError naming ``path`` (and a line unless the fault is the whole file)."""
    try:
        kb = load()
    except KBFormatError as err:
        assert err.path == str(path) and str(path) in str(err), str(err)
        assert err.line is not None or any(m in str(err) for m in FILE_LEVEL), f"no line in: {err}"
        assert err.line is None or err.line >= 1
        return
    assert kb.num_names > 0
    for name in kb.names:
        assert name and name == name.strip() and "\n" not in name
        assert kb.ids_for(name), f"name {name!r} maps to no concept"


def _write(directory: str, name: str, data: bytes) -> Path:
    path = Path(directory) / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", sorted(LOADERS))
@SETTINGS
@given(data=st.data())
def test_kb_loaders_survive_arbitrary_bytes(fmt: str, data: st.DataObject) -> None:
    name, _ = KB_FILES[fmt]
    raw = data.draw(st.one_of(st.binary(max_size=200), st.text(max_size=120).map(str.encode)), label="file")
    auto = data.draw(st.booleans(), label="auto")
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, name, raw)
        check_kb_outcome(lambda: load_files(path, format="auto" if auto else fmt), path)


@pytest.mark.parametrize("fmt", sorted(LOADERS))
@SETTINGS
@given(data=st.data())
def test_kb_loaders_survive_small_edits(fmt: str, data: st.DataObject) -> None:
    name, valid = KB_FILES[fmt]
    raw = data.draw(small_edits(valid), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, name, raw)
        check_kb_outcome(lambda: load_files(path, format=fmt), path)


def test_every_valid_sample_loads():
    """The edits above start from files that load (otherwise they would test nothing)."""
    assert set(KB_FILES) == set(LOADERS)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, (name, valid) in KB_FILES.items():
            assert load_files(_write(tmp, name, valid), format=fmt).num_names >= 2, fmt


@SETTINGS
@given(cut=st.integers(0, 200), flip=st.one_of(st.none(), st.integers(0, 200)))
@example(cut=12, flip=None)  # regression: a .gz cut short was a bare EOFError
def test_gzipped_kb_cut_or_damaged(cut: int, flip) -> None:
    """A gzip-compressed KB cut short or with a flipped byte: a KBFormatError at a line, never EOFError / zlib.error."""
    blob = bytearray(gzip.compress(KB_FILES["tsv"][1] * 20))
    if flip is not None and blob:
        blob[flip % len(blob)] ^= 0x55
    blob = blob[: len(blob) - cut % len(blob)] if cut else blob
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, "kb.tsv.gz", bytes(blob))
        check_kb_outcome(lambda: load_files(path, format="tsv"), path)


#: inputs that escaped as another exception before (the bug each fixed is named)
KB_REGRESSIONS = [
    ("tsv", "kb.tsv.gz", gzip.compress(b"D1\tfoo\nD2\tbar\n")[:-6], 3),  # EOFError: both lines read, the end missing
    ("tsv", "kb.tsv", b"\x1f\x8bnot gzip at all", 1),  # BadGzipFile
    ("umls", "MRCONSO.RRF", b"|ENG|P|L|PF|S|Y|A||||MSH|PT|X|breast cancer|0|N||\n", 1),  # ValueError: empty concept id
    ("obo", "hp.obo", b"[Term]\nid: \\W\nname: seizure\n", 2),  # an id that unescapes to a space: ValueError
    ("json", "onto.json", b"[" * 50000, None),  # RecursionError from the JSON parser
    ("json", "onto.json", b'{\n "D1": ["a"],\n "D2": {"b": 1}\n}', 3),  # a semantic error without a line
]


@pytest.mark.parametrize("fmt, name, raw, line", KB_REGRESSIONS, ids=[f"{f}-{i}" for i, (f, *_) in enumerate(KB_REGRESSIONS)])
def test_kb_regressions(fmt: str, name: str, raw: bytes, line) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, name, raw)
        with pytest.raises(KBFormatError) as err:
            load_files(path, format=fmt)
        assert err.value.path == str(path) and err.value.line == line, str(err.value)


@pytest.mark.parametrize("read", [read_pubtator, read_biosyn_dir, read_askapatient])
def test_corpus_regression_broken_gzip(read: Callable[[Path], MentionList]) -> None:
    """A corpus .gz cut short was a bare EOFError; now the line where the readable text stops."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, "corpus.txt.gz", gzip.compress(CORPUS_FILES["askapatient"][1] * 3)[:-8])
        with pytest.raises(CorpusFormatError, match="gzip stream is truncated or corrupt") as err:
            read(path)
        assert err.value.line >= 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(raw=small_edits(KB_FILES["tsv"][1]))
@example(raw=b"D1\tfoo\nD2\n")  # a line without a name
def test_kb_build_leaves_a_complete_directory_or_none(raw: bytes) -> None:
    """``kb build`` via the CLI: exit 0 and a loadable KB directory (with its index), or exit 1 naming the
    file and no output at all, not even a temp directory beside it."""
    from typer.testing import CliRunner

    from spacy_angel.apps.cli import get_app

    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, "kb.tsv", raw)
        out = Path(tmp) / "kb"
        result = CliRunner().invoke(get_app(), ["kb", "build", str(path), "-o", str(out)])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        if result.exit_code == 0:
            kb = KnowledgeBase.from_disk(out)
            assert kb.num_names > 0 and (out / "tfidf.safetensors").is_file() and (out / "tfidf.json").is_file()
        else:
            assert result.exit_code == 1 and str(path) in result.output, result.output
            assert not out.exists()
        assert sorted(p.name for p in Path(tmp).iterdir()) == sorted(["kb.tsv"] + (["kb"] if result.exit_code == 0 else []))


# ----------------------------------------------------------------------------------- corpora
CORPUS_FILES: Dict[str, Tuple[str, bytes, Callable[[Path], MentionList]]] = {
    "pubtator": ("corpus.txt", b"1|t|Breast cancer today.\n1|a|Patients with migraine.\n"
                               b"1\t0\t13\tBreast cancer\tDisease\tD001943\n1\t35\t43\tmigraine\tDisease\tMESH:D008881\n\n"
                               b"2|t|Gout.\n2|a|None.\n2\t0\t4\tGout\tDisease\tD006073|-1\n", read_pubtator),
    "biosyn": ("test.concept", b"1234||0|13||Disease||breast cancer||D001943\n1234||20|28||Disease||migraine||D008881\n"
                               b"1235||0|9||Disease||a|b cancer||D1|D2\n", read_biosyn_dir),
    "askapatient": ("fold.txt", b"D1\tfoo\tmy head hurts\n10019211\tbar\tcannot sleep\n", read_askapatient),
}


def check_corpus_outcome(read: Callable[[Path], MentionList], path: Path) -> None:
    """Mentions whose offsets lie in their text, or a CorpusFormatError naming ``path`` and a line."""
    try:
        mentions = read(path)
    except CorpusFormatError as err:
        assert err.path == str(path) and err.line >= 1 and str(err).startswith(f"{path}:{err.line}: "), str(err)
        return
    assert mentions.report.mentions == len(mentions)
    for m in mentions:
        assert 0 <= m.start <= m.end <= len(m.text) and m.gold_ids and all(m.gold_ids), m


def test_every_valid_corpus_sample_reads():
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, (name, valid, read) in CORPUS_FILES.items():
            assert len(read(_write(tmp, name, valid))) >= 2, fmt


@pytest.mark.parametrize("fmt", sorted(CORPUS_FILES))
@SETTINGS
@given(data=st.data())
def test_corpus_readers_survive_arbitrary_bytes(fmt: str, data: st.DataObject) -> None:
    name, _, read = CORPUS_FILES[fmt]
    gz = data.draw(st.booleans(), label="gzip magic")
    raw = data.draw(st.binary(max_size=200), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        check_corpus_outcome(read, _write(tmp, name, (b"\x1f\x8b" + raw) if gz else raw))


@pytest.mark.parametrize("fmt", sorted(CORPUS_FILES))
@SETTINGS
@given(data=st.data())
def test_corpus_readers_survive_small_edits(fmt: str, data: st.DataObject) -> None:
    name, valid, read = CORPUS_FILES[fmt]
    gz = data.draw(st.booleans(), label="gzip")
    raw = data.draw(small_edits(gzip.compress(valid, mtime=0) if gz else valid), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        check_corpus_outcome(read, _write(tmp, name, raw))

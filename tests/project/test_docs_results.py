"""docs/results.md quotes docs/results/ncbi-cpu.json and aap-cpu.json (written by `spacy project run cpu-ncbi`
and `cpu-aap`): they must agree."""
import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


@pytest.fixture(scope="module")
def results():
    path = DOCS / "results" / "ncbi-cpu.json"
    if not path.exists():
        pytest.skip("no results file yet")
    return json.loads(path.read_text(encoding="utf-8")), (DOCS / "results.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("row,key", [("(a) TF-IDF", "tfidf"), ("(b) positive-only", "positive"), ("(c) + ANGEL", "angel"),
                                     ("(d) hybrid (positive", "hybrid_positive"), ("(e) **hybrid (ANGEL", "hybrid")])
def test_accuracy_rows_quote_the_results_file(results, row, key):
    data, text = results
    line = next(l for l in text.splitlines() if l.startswith(f"| {row}"))
    numbers = re.findall(r"\d+\.\d+", line.split("|", 2)[2])
    assert numbers[:2] == [_pct(data[f"{key}_acc1"]), _pct(data[f"{key}_acc5"])], line


def test_end_to_end_rows_quote_the_results_file(results):
    data, text = results
    pairs = next(l for l in text.splitlines() if l.startswith("| (span, concept id) pairs"))
    ner = next(l for l in text.splitlines() if l.startswith("| NER spans only"))
    assert re.findall(r"\d+\.\d+", pairs) == [_pct(data[f"e2e_{k}"]) for k in ("precision", "recall", "f1")]
    assert re.findall(r"\d+\.\d+", ner)[-3:] == [_pct(data[f"ner_{k}"]) for k in ("precision", "recall", "f1")]


def _diff_line(text: str, start: str) -> str:
    return next(l for l in text.splitlines() if l.startswith(start))


def test_differences_quote_the_paired_tests(results):
    data, text = results
    for start, key in (("| (e) hybrid(ANGEL) - (a)", "hybrid_vs_tfidf"), ("| (c) ANGEL - (b)", "angel_vs_positive"),
                       ("| (e) - (d)", "hybrid_angel_vs_positive")):
        line = _diff_line(text, start)
        lo, hi = data[f"{key}_ci"]
        assert f"{100 * data[key]:+.2f}" in line and f"{100 * lo:+.2f} to {100 * hi:+.2f}" in line, line


def test_askapatient_rows_quote_their_results_file():
    path = DOCS / "results" / "aap-cpu.json"
    if not path.exists():
        pytest.skip("no AskAPatient results file yet")
    data = json.loads(path.read_text(encoding="utf-8"))
    text = (DOCS / "results.md").read_text(encoding="utf-8").split("## AskAPatient", 1)[1]
    for row, key in (("TF-IDF char", "tfidf"), ("positive-only, beam", "positive"), ("ANGEL (DPO + NLL), beam", "angel"),
                     ("hybrid (positive)", "hybrid_positive"), ("**hybrid (ANGEL)**", "hybrid")):
        line = next(l for l in text.splitlines() if l.startswith(f"| {row}"))
        numbers = re.findall(r"\d+\.\d+", line.split("|", 2)[2])
        assert numbers[:2] == [_pct(data[f"{key}_acc1"]), _pct(data[f"{key}_acc5"])], line


@pytest.mark.parametrize("row,key", [("TF-IDF char 3-gram nearest name |", "raw_tfidf"), ("ANGEL model, beam", "raw_beam"),
                                     ("**hybrid: ANGEL model + name encoder", "raw_hybrid")])
def test_raw_mention_rows_quote_the_results_file(results, row, key):
    """Row g (issue 28's raw-mention protocol) quotes the raw_* keys cpu-raw-evaluate writes."""
    data, text = results
    table = text[text.index("| (g) raw test mentions"):]
    line = next(l for l in table.splitlines() if l.startswith(f"| {row}"))
    numbers = re.findall(r"\d+\.\d+", line.split("|", 2)[2])
    assert numbers[:2] == [_pct(data[f"{key}_acc1"]), _pct(data[f"{key}_acc5"])], line

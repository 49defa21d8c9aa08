"""docs/results.md quotes docs/results/ncbi-cpu.json (written by `spacy project run cpu-ncbi`): they must agree."""
import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


@pytest.fixture(scope="module")
def results():
    path = DOCS / "results" / "ncbi-cpu.json"
    if not path.exists():
        pytest.skip("no results file yet")
    return json.loads(path.read_text(encoding="utf-8")), (DOCS / "results.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("row,key", [("(a) TF-IDF", "tfidf"), ("(b) positive-only", "positive"), ("(c) + ANGEL", "angel")])
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


def test_difference_quotes_the_paired_test(results):
    data, text = results
    assert f"(c) - (b) = {100 * data['angel_minus_positive_acc1']:+.2f} Acc@1" in text

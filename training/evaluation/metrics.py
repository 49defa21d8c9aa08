"""Accuracy@k, per-mention reports, significance tests and the similarity-bin plot.

Conventions (as in the biomedical EL literature and ANGEL): a mention is correct at ``k`` when
any of its gold ids is among the ids of the first ``k`` candidates, so a composite mention with
two gold ids is right if either is predicted. With a KB, ids are compared through
``kb.canonical_id`` so retired/alias ids count.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from spacy_angel.errors import Errors, Warnings
from spacy_angel.fileio import atomic_write_bytes
from spacy_angel.types import Candidate, Mention

if TYPE_CHECKING:  # pragma: no cover
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.tfidf import NameIndex


DEFAULT_KS: Tuple[int, ...] = (1, 2, 3, 4, 5)


PathLike = Union[str, Path]


# ---------------------------------------------------------------------- correctness
def _canon(kb: Optional["KnowledgeBase"], kb_id: str) -> str:
    if kb is None:
        return kb_id
    try:
        cid = kb.canonical_id(kb_id)
    except (KeyError, ValueError):
        return kb_id
    return cid if cid else kb_id


def _cand_ids(cand: Any) -> Tuple[str, ...]:
    """Ids of a Candidate, or of a report's ``[ids, name, score]`` triple."""
    if isinstance(cand, Candidate):
        return tuple(cand.kb_ids)
    if isinstance(cand, Mapping):
        return tuple(cand["kb_ids"])
    return tuple(cand[0])


def first_correct_rank(
    candidates: Sequence[Any], gold_ids: Sequence[str], kb: Optional["KnowledgeBase"] = None
) -> Optional[int]:
    """1-based rank of the first candidate sharing an id with the gold set, ``None`` if none."""
    gold: Set[str] = {_canon(kb, g) for g in gold_ids}
    if not gold:
        return None
    for rank, cand in enumerate(candidates, start=1):
        if any(_canon(kb, i) in gold for i in _cand_ids(cand)):
            return rank
    return None


def accuracy_at_k(
    predictions: Sequence[Sequence[Candidate]],
    gold: Sequence[Sequence[str]],
    ks: Sequence[int] = DEFAULT_KS,
    kb: Optional["KnowledgeBase"] = None,
) -> Dict[str, float]:
    """``{"acc@1": .., ..., "n": N}``; a mention counts at k if its first correct rank is <= k."""
    if len(predictions) != len(gold):
        raise ValueError(Errors.E367.format(predictions=len(predictions), gold=len(gold)))
    ranks = [first_correct_rank(p, g, kb) for p, g in zip(predictions, gold)]
    n = len(ranks)
    out: Dict[str, float] = {}
    for k in ks:
        hits = sum(1 for r in ranks if r is not None and r <= k)
        out[f"acc@{k}"] = hits / n if n else 0.0
    out["n"] = n
    return out


# ---------------------------------------------------------------------- reports
def evaluation_report(
    mentions: Sequence[Union[Mention, str]],
    predictions: Sequence[Sequence[Candidate]],
    kb: Optional["KnowledgeBase"] = None,
    ks: Sequence[int] = DEFAULT_KS,
    name_index: Optional["NameIndex"] = None,
    gold: Optional[Sequence[Sequence[str]]] = None,
    edges: Optional[Sequence[float]] = None,
) -> Dict[str, Any]:
    """Per-mention entries plus a summary (Acc@k, bootstrap CI of Acc@1, per-bin Acc@1).

    Gold ids come from ``Mention.gold_ids`` unless ``gold`` is given (needed for plain strings).
    With ``name_index``, each entry gets the max TF-IDF cosine of the mention to any name of
    its gold concept(s) and the bin of that value (paper Fig. 4).
    """
    from training.evaluation.similarity_bins import DEFAULT_EDGES, bin_labels, value_to_bin

    if len(mentions) != len(predictions):
        raise ValueError(Errors.E368.format(mentions=len(mentions), predictions=len(predictions)))
    if gold is not None and len(gold) != len(mentions):
        raise ValueError(Errors.E369.format(gold=len(gold), mentions=len(mentions)))
    if kb is None and name_index is not None:
        kb = name_index.kb
    edges = tuple(edges if edges is not None else DEFAULT_EDGES)

    entries: List[Dict[str, Any]] = []
    golds: List[Tuple[str, ...]] = []
    for i, (m, preds) in enumerate(zip(mentions, predictions)):
        if isinstance(m, Mention):
            surface, doc_id, gids = m.surface, m.doc_id, tuple(m.gold_ids)
        else:
            surface, doc_id, gids = str(m), "", ()
        if gold is not None:
            gids = tuple(gold[i])
        golds.append(gids)
        rank = first_correct_rank(preds, gids, kb)
        entry: Dict[str, Any] = {
            "mention": surface,
            "doc_id": doc_id,
            "gold_ids": list(gids),
            "candidates": [[list(c.kb_ids), c.name, float(c.score)] for c in preds],
            "correct@1": rank == 1,
            "rank": rank,
        }
        if name_index is not None:
            gold_names: List[str] = []
            for g in gids:
                try:
                    gold_names.extend(name_index.kb.names_for(_canon(kb, g)))
                except (KeyError, ValueError):
                    pass
            sim = name_index.max_similarity(surface, gold_names)
            entry["max_similarity"] = sim
            entry["similarity_bin"] = None if sim is None else value_to_bin(sim, edges)
        entries.append(entry)

    summary: Dict[str, Any] = dict(accuracy_at_k(predictions, golds, ks, kb))
    correct1 = np.array([e["correct@1"] for e in entries], dtype=float)
    if len(correct1):
        mean, lo, hi = bootstrap_ci(correct1)
        summary["acc@1_ci95"] = [lo, hi]
    if name_index is not None:
        summary["similarity_edges"] = list(edges)
        summary["bins"] = _bin_summary(entries, edges)
        summary["bin_labels"] = bin_labels(edges)
    return {"summary": summary, "mentions": entries}


def _bin_summary(entries: Sequence[Mapping[str, Any]], edges: Sequence[float]) -> List[Dict[str, Any]]:
    out = []
    for b in range(len(edges) - 1):
        hits = [bool(e["correct@1"]) for e in entries if e.get("similarity_bin") == b]
        out.append({"bin": b, "n": len(hits), "acc@1": (sum(hits) / len(hits)) if hits else None})
    return out


def write_report(report: Mapping[str, Any], path: PathLike) -> None:
    """JSON, written to a temp file then ``os.replace``d: a crash never leaves half a report."""
    atomic_write_bytes(path, json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8"))


def read_report(path: PathLike) -> Dict[str, Any]:
    """A report of :func:`write_report`; anything else is refused naming the file (not a bare KeyError)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(Errors.E116.format(path=path, err=f"not valid JSON: {err}")) from None
    if not isinstance(data, dict) or not isinstance(data.get("mentions"), list):
        raise ValueError(Errors.E116.format(path=path, err="no 'mentions' list"))
    return data


# ---------------------------------------------------------------------- statistics
def _bootstrap_means(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n`` resamples with replacement of ``values``.

    For discrete data (0/1 correctness, -1/0/1 differences) the resample counts are a
    multinomial over the distinct values, so this is exact and O(n) memory instead of O(n*m).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    m = len(values)
    uniq, counts = np.unique(values, return_counts=True)
    if len(uniq) <= 16:
        draws = rng.multinomial(m, counts / m, size=n)  # n x |uniq|
        return draws @ uniq / m
    out = np.empty(n, dtype=np.float64)
    step = max(1, int(4_000_000 // max(m, 1)))
    for s in range(0, n, step):
        e = min(n, s + step)
        idx = rng.integers(0, m, size=(e - s, m))
        out[s:e] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(
    correct: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> Tuple[float, float, float]:
    """``(mean, low, high)``: percentile bootstrap confidence interval of the mean."""
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if not len(correct):
        raise ValueError(Errors.E370)
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(correct, n, rng)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    mean = float(correct.mean())
    return mean, float(min(lo, mean)), float(max(hi, mean))


def paired_bootstrap_test(
    a_correct: np.ndarray, b_correct: np.ndarray, n: int = 10000, seed: int = 0
) -> Dict[str, Any]:
    """Is system A's accuracy different from B's on the same mentions?

    Paired bootstrap (two-sided, resampled differences re-centred at 0):
    ``p = (1 + #{|d* - d| >= |d|}) / (n + 1)``; plus McNemar's exact test (binomial test on
    the discordant pairs), which needs no resampling.
    """
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=np.float64).ravel()
    b = np.asarray(b_correct, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(Errors.E371.format(a=len(a), b=len(b)))
    if not len(a):
        raise ValueError(Errors.E372)
    d = a - b
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(d, n, rng)
    extreme = int(np.sum(np.abs(means - diff) >= abs(diff) - 1e-12))
    p_boot = (1 + extreme) / (n + 1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    a_only = int(np.sum((a > 0.5) & (b <= 0.5)))
    b_only = int(np.sum((a <= 0.5) & (b > 0.5)))
    p_mcnemar = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {
        "n": int(len(a)),
        "acc_a": float(a.mean()),
        "acc_b": float(b.mean()),
        "diff": diff,
        "diff_ci95": [float(lo), float(hi)],
        "p_value": float(min(1.0, p_boot)),
        "a_only_correct": a_only,
        "b_only_correct": b_only,
        "mcnemar_p": p_mcnemar,
    }


def compare_reports(path_a: PathLike, path_b: PathLike, n: int = 10000, seed: int = 0) -> Dict[str, Any]:
    """Paired comparison of two report files, mentions matched by position.

    Raises if the mention counts differ (the reports cannot be about the same test set); a
    differing surface string at some position only warns (normalisation may differ).
    """
    ra, rb = read_report(path_a), read_report(path_b)
    ma, mb = ra["mentions"], rb["mentions"]
    if len(ma) != len(mb):
        raise ValueError(Errors.E373.format(path_a=path_a, n_a=len(ma), path_b=path_b, n_b=len(mb)))
    mismatched = [i for i, (x, y) in enumerate(zip(ma, mb)) if x.get("mention") != y.get("mention")]
    if mismatched:
        warnings.warn(Warnings.W100.format(n=len(mismatched), path_a=path_a, path_b=path_b, first=mismatched[0]))
    a = np.array([bool(e["correct@1"]) for e in ma], dtype=float)
    b = np.array([bool(e["correct@1"]) for e in mb], dtype=float)
    result = paired_bootstrap_test(a, b, n=n, seed=seed) if len(a) else {"n": 0}
    result.update(
        {
            "a": str(path_a),
            "b": str(path_b),
            "surface_mismatches": len(mismatched),
            "a_only_indices": [i for i in range(len(a)) if a[i] and not b[i]],
            "b_only_indices": [i for i in range(len(a)) if b[i] and not a[i]],
        }
    )
    return result


# ---------------------------------------------------------------------- plotting
def plot_bins(reports: Mapping[str, Mapping[str, Any]], path: PathLike, title: Optional[str] = None) -> None:
    """Grouped bar chart of Acc@1 per mention/gold similarity bin, one colour per system.

    Uses the Agg canvas directly (no pyplot), so it never changes the global backend.
    Reports must come from :func:`evaluation_report` with a ``name_index``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from training.evaluation.similarity_bins import DEFAULT_EDGES, bin_labels

    if not reports:
        raise ValueError(Errors.E374)
    edges = None
    for name, rep in reports.items():
        e = rep.get("summary", {}).get("similarity_edges")
        if e is None and not any("similarity_bin" in m for m in rep.get("mentions", [])):
            raise ValueError(Errors.E375.format(name=name))
        e = tuple(e) if e is not None else tuple(DEFAULT_EDGES)
        if edges is not None and e != edges:
            raise ValueError(Errors.E376)
        edges = e
    assert edges is not None
    labels = bin_labels(edges)
    nb = len(labels)
    fig = Figure(figsize=(max(6.0, 1.3 * nb + 2), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(reports)
    x = np.arange(nb)
    for j, (name, rep) in enumerate(reports.items()):
        bins = _bin_summary(rep["mentions"], edges)
        acc = [b["acc@1"] if b["acc@1"] is not None else 0.0 for b in bins]
        bars = ax.bar(x + (j - (len(reports) - 1) / 2) * width, acc, width, label=name)
        for bar, b in zip(bars, bins):
            ax.annotate(
                f"n={b['n']}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlabel("max TF-IDF cosine of mention to gold-concept names")
    ax.set_ylabel("Acc@1")
    ax.set_ylim(0, 1.1)
    ax.set_title(title or "Acc@1 by mention/gold similarity")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())

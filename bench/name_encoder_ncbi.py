"""The dense name encoder on NCBI-disease (paper protocol): does what a KB's synonym sets (and the
training mentions) teach carry to the mentions of a benchmark?

No generative model: this measures the retrievers alone, side by side on the same mentions:

* TF-IDF: char 3-gram nearest name (scispacy's lookup; the hybrid linker's retriever);
* dense: the encoder (``spacy-angel train name-encoder``'s training) trained on the dictionary's
  synonym sets, and again with the training mentions added to their concepts' sets (``--train``);
* dense + TF-IDF: ``dense + a * tfidf`` per name, ``a`` chosen on dev from a grid.

Protocol: BioSyn's preprocessed NCBI-disease (``processed_dev`` against ``dev_dictionary.txt``,
``processed_test`` against ``test_dictionary.txt``, mentions lowercased, abbreviations expanded,
composite mentions as BioSyn split them), Acc@1 with the paper's rule (a prediction is right when
it shares an id with the gold). Choices are made on dev; test only reports.

    .venv/bin/python bench/name_encoder_ncbi.py --data ../shared/data/biosyn/ncbi-disease \\
        --json docs/results/name_encoder_ncbi.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json_atomic  # noqa: E402

from spacy_angel.kb.readers import load_files  # noqa: E402
from spacy_angel.retrieval.dense_index import DenseNameIndex  # noqa: E402
from spacy_angel.retrieval.tfidf import NameIndex  # noqa: E402
from training.data.corpora import read_corpus  # noqa: E402
from training.data.preprocess import preprocess  # noqa: E402
from training.evaluation.metrics import accuracy_at_k  # noqa: E402
from training.settings import NameEncoderSettings  # noqa: E402
from training.stages.name_encoder import train_name_encoder  # noqa: E402

GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def mentions(path: Path, kb: Any) -> List[Any]:
    kept, _ = preprocess(read_corpus(path, format="biosyn"), lowercase=True, expand_abbreviations=True, kb=kb)
    return list(kept)


def fused_top1(kb: Any, tfidf: NameIndex, dense: DenseNameIndex, surfaces: Sequence[str], a: float, k: int = 20) -> List[Any]:
    """Top concept by ``dense + a * tfidf`` over the union of both retrievers' top-``k`` names."""
    from spacy_angel.retrieval.candidates import concepts_from_hits

    t_hits, d_hits = tfidf.nearest_names(list(surfaces), k), dense.nearest_names(list(surfaces), k)
    names = [sorted({i for i, _ in t} | {i for i, _ in d}) for t, d in zip(t_hits, d_hits)]
    t_cos, d_cos = tfidf.cosine(list(surfaces), names), dense.cosine(list(surfaces), names)
    out = []
    for idx, tc, dc in zip(names, t_cos, d_cos):
        score = dc + a * tc
        order = np.lexsort((np.array(idx), -score))
        out.append(concepts_from_hits(kb, [(idx[j], float(score[j])) for j in order], 1))
    return out


def acc1(predictions: Sequence[Any], ms: Sequence[Any], kb: Any) -> float:
    return round(accuracy_at_k(predictions, [m.gold_ids for m in ms], ks=(1,), kb=kb)["acc@1"], 4)


def run_split(kb: Any, train: Sequence[Any], ms: Sequence[Any], settings: NameEncoderSettings, alphas: Dict[str, float]) -> Dict[str, Any]:
    surfaces = [m.surface for m in ms]
    tfidf = NameIndex(kb).fit()
    row: Dict[str, Any] = {"n": len(ms), "kb_names": kb.num_names, "tfidf_acc1": acc1(tfidf.link(surfaces, k=1), ms, kb)}
    for label, extra in (("kb", []), ("kb+train", [(m.surface, m.gold_ids) for m in train])):
        started = time.time()
        encoder, log = train_name_encoder(kb, settings, extra)
        dense = DenseNameIndex(kb, encoder)
        row[f"dense[{label}]"] = {"acc1": acc1(dense.link(surfaces, k=1), ms, kb), "train_seconds": round(time.time() - started, 1),
                                  "synonym_sets": log["synonym_sets"]}
        grid = alphas.get(label)
        choices = {str(a): acc1(fused_top1(kb, tfidf, dense, surfaces, a), ms, kb) for a in (GRID if grid is None else [grid])}
        row[f"dense+tfidf[{label}]"] = choices
    return row


def encoder_arguments(p: argparse.ArgumentParser) -> None:
    """The options of both encoder benches: training length, torch threads, the JSON to write."""
    p.add_argument("--steps", type=int, default=NameEncoderSettings.steps)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)


def encoder_settings(args: argparse.Namespace) -> NameEncoderSettings:
    """The encoder's settings for a bench run, with torch's thread count set (float sums depend on it)."""
    import torch

    torch.set_num_threads(args.threads)
    return NameEncoderSettings(steps=args.steps, progress=False)


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the BioSyn ncbi-disease folder (processed_* and *_dictionary.txt)")
    encoder_arguments(p)
    args = p.parse_args(argv)
    settings = encoder_settings(args)
    kb_dev = load_files([args.data / "dev_dictionary.txt"], format="biosyn")
    kb_test = load_files([args.data / "test_dictionary.txt"], format="biosyn")
    train = mentions(args.data / "processed_train", kb_dev)
    dev = run_split(kb_dev, train, mentions(args.data / "processed_dev", kb_dev), settings, {})
    # the fusion weight a of each encoder: the best on dev (ties: the smaller a)
    alphas = {label: float(max(dev[f"dense+tfidf[{label}]"].items(), key=lambda kv: (kv[1], -float(kv[0])))[0])
              for label in ("kb", "kb+train")}
    test = run_split(kb_test, mentions(args.data / "processed_train", kb_test), mentions(args.data / "processed_test", kb_test),
                     settings, alphas)
    result = {"command": "python bench/name_encoder_ncbi.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "protocol": "BioSyn-processed NCBI-disease, paper protocol (Acc@1, any shared id), no generative model",
              "encoder_steps": args.steps, "torch_threads": args.threads, "alpha_chosen_on_dev": alphas,
              "dev": dev, "test": test, "machine": machine()}
    print(json.dumps(result, indent=1))
    if args.json:
        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()

"""Hybrid linking with ANN retrieval against exact retrieval, on NCBI-disease dev and test (issue 27's
"the same Acc@1 as exact retrieval at NCBI scale").

One process, one linker per split, linked twice: once with the exact TF-IDF index and once with the same
fit searched through an ANN graph (`search="ann"`, the package defaults), so only retrieval differs.
Protocol: the paper's (BioSyn-processed mentions, BioSyn's dev / test dictionaries), the cpu-ncbi
workflow's ANGEL model and fusion weights; no context words.

    cd projects/angel && python ../../bench/ann_vs_exact_ncbi.py --data-dir ../../../shared/data \
        --json ../../docs/results/ann_vs_exact_ncbi.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="the shared data folder (biosyn/ncbi-disease/...)")
    p.add_argument("--model", type=Path, default=Path("training/cpu/angel"))
    p.add_argument("--fusion", type=Path, default=Path("training/cpu/fusion-angel.json"))
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    from spacy_angel.fileio import atomic_write_json
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.linking.fusion import FusionWeights
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.retrieval.tfidf import NameIndex
    from training.cli_support import load_mentions
    from training.evaluation.metrics import evaluation_report
    from training.settings import CorpusSettings

    torch.set_num_threads(2)
    weights = FusionWeights.from_file(args.fusion)
    report: Dict[str, Any] = {"command": "python ../../bench/ann_vs_exact_ncbi.py " + " ".join(argv or sys.argv[1:]),
                              "model": str(args.model), "fusion": str(args.fusion), "protocol": "paper (BioSyn)"}
    for split, kb_dir in (("dev", "training/cpu/kb_dev"), ("test", "training/cpu/kb_test")):
        kb = KnowledgeBase.from_disk(kb_dir)
        mentions, _ = load_mentions(args.data_dir / "biosyn" / "ncbi-disease" / f"processed_{split}", kb,
                                    CorpusSettings(), label=split)
        exact = NameIndex(kb).fit()
        ann = NameIndex(kb, search="ann").fit().build_ann()  # the same fit (deterministic), then its graph
        assert ann.fit_id == exact.fit_id
        rows: Dict[str, Any] = {}
        top1 = {}
        for name, index in (("exact", exact), ("ann", ann)):
            linker = AngelLinker.from_pretrained(str(args.model), kb, device="cpu", num_beams=5, batch_size=32,
                                                 mode="hybrid", num_candidates=20, name_index=index, fusion=weights)
            t0 = time.perf_counter()
            predictions = linker.link(mentions, top_k=5)
            seconds = time.perf_counter() - t0
            summary = evaluation_report(mentions, predictions, kb=kb, ks=(1, 5))["summary"]
            rows[name] = {"acc@1": summary["acc@1"], "acc@5": summary["acc@5"], "seconds": round(seconds, 2)}
            top1[name] = [p[0].name if p else None for p in predictions]
        same = sum(a == b for a, b in zip(top1["exact"], top1["ann"]))
        report[split] = {"mentions": len(mentions), "names": len(kb.names), **rows, "same_top1": same}
        print(json.dumps({split: report[split]}), flush=True)
    atomic_write_json(args.json, report, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

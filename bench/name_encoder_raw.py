"""The dense name encoder on raw NCBI-disease mentions against CTD MEDIC 2017 (issue 28's raw-mention
protocol): what a linker sees behind an NER on raw abstracts, with no generative model.

Protocol: the PubTator mentions as written (``read_pubtator``: no lowercasing, no abbreviation expansion,
composite mentions kept whole), linked against MEDIC 2017 alone (no training names in the KB), Acc@1
with the paper's rule (right when the prediction shares an id with the gold), as ``bench/linking_throughput.py``
scores its raw-mention rows. One encoder per variant serves dev and test (one KB); the weight ``a``
of ``dense + a * tfidf`` is chosen on the development set.

* ``kb``: trained on MEDIC's synonym sets;
* ``kb+train``: the training set's mentions join their concepts' sets.

    .venv/bin/python bench/name_encoder_raw.py --kb ../shared/data/medic/CTD_diseases_2017.tsv.gz \\
        --corpus-dir ../shared/data/ncbi-disease --json docs/results/name_encoder_raw.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json_atomic  # noqa: E402
from name_encoder_ncbi import GRID, acc1, encoder_arguments, encoder_settings, fused_top1  # noqa: E402

from spacy_angel.kb.readers import load_files  # noqa: E402
from spacy_angel.retrieval.dense_index import DenseNameIndex  # noqa: E402
from spacy_angel.retrieval.tfidf import NameIndex  # noqa: E402
from training.data.corpora import read_pubtator  # noqa: E402
from training.stages.name_encoder import train_name_encoder  # noqa: E402


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="CTD MEDIC 2017 (CTD_diseases_2017.tsv.gz)")
    p.add_argument("--corpus-dir", type=Path, required=True, help="folder of NCBI{train,develop,test}set_corpus.txt")
    encoder_arguments(p)
    args = p.parse_args(argv)
    settings = encoder_settings(args)
    kb = load_files([args.kb])
    split = {name: list(read_pubtator(args.corpus_dir / f"NCBI{name}set_corpus.txt")) for name in ("train", "develop", "test")}
    dev, test = split["develop"], split["test"]
    tfidf = NameIndex(kb).fit()
    result: Dict[str, Any] = {
        "command": "python bench/name_encoder_raw.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "protocol": "raw PubTator NCBI-disease mentions (as written) against CTD MEDIC 2017 alone; Acc@1, any shared id; no generative model",
        "kb_names": kb.num_names, "n": {"dev": len(dev), "test": len(test)}, "encoder_steps": args.steps, "torch_threads": args.threads,
        "tfidf_acc1": {"dev": acc1(tfidf.link([m.surface for m in dev], k=1), dev, kb),
                       "test": acc1(tfidf.link([m.surface for m in test], k=1), test, kb)},
    }
    for label, extra in (("kb", []), ("kb+train", [(m.surface, m.gold_ids) for m in split["train"]])):
        started = time.time()
        encoder, log = train_name_encoder(kb, settings, extra)
        dense = DenseNameIndex(kb, encoder)
        row: Dict[str, Any] = {"train_seconds": round(time.time() - started, 1), "synonym_sets": log["synonym_sets"]}
        for name, ms in (("dev", dev), ("test", test)):
            row[f"dense_acc1_{name}"] = acc1(dense.link([m.surface for m in ms], k=1), ms, kb)
        grid = {str(a): acc1(fused_top1(kb, tfidf, dense, [m.surface for m in dev], a), dev, kb) for a in GRID}
        best = float(max(grid.items(), key=lambda kv: (kv[1], -float(kv[0])))[0])
        row.update(fused_dev=grid, a_chosen_on_dev=best,
                   fused_acc1_test=acc1(fused_top1(kb, tfidf, dense, [m.surface for m in test], best), test, kb))
        result[f"dense[{label}]"] = row
    result["machine"] = machine()
    print(json.dumps(result, indent=1))
    if args.json:
        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()

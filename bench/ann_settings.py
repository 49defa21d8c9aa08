"""ANN search settings side by side on one KB folder: queries/s and the share of the exact top-20 found.

How ``spacy_angel.retrieval.ann_search.AnnSearchSettings``' defaults were chosen: on NCBI-disease dev
mentions (the KB-scale bench's queries) against a ``kb build --ann`` folder of that bench. The exact top-20
is computed once; each setting then runs twice over the queries (the first pass warms the mapped pages)
and the second is reported.

    python bench/ann_settings.py --kb .cache/bench/kb_scale/kb-6000000 --json docs/results/ann_settings_6m.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_json_atomic  # noqa: E402
from kb_scale import read_queries  # noqa: E402

GRID = ('{"rare_depth": 200}', '{"rare_depth": 1000}', '{}', '{"rare_depth": 200, "expansion_search": 512, "graph_depth": 400}',
        '{"rare_budget": 150000}', '{"rare_budget": 0}')  # the last: the graph alone


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="a KB folder written with kb build --ann")
    p.add_argument("--queries", type=int, default=960, help="NCBI-disease dev mentions used as queries")
    p.add_argument("--grid", nargs="+", default=list(GRID), help="JSON objects: AnnSearchSettings fields ({} = defaults)")
    p.add_argument("--json", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from dataclasses import asdict, replace

    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.ann_search import AnnSearchSettings, recall_of_exact
    from spacy_angel.retrieval.tfidf import NameIndex

    kb = KnowledgeBase.from_disk(args.kb)
    ann = NameIndex.from_disk(args.kb, kb, search="ann")
    exact = NameIndex.from_disk(args.kb, kb)
    queries = read_queries(args.queries)
    want = exact.nearest_names(queries, 20)
    rows: List[Dict[str, Any]] = []
    for spec in args.grid:
        ann.ann = replace(AnnSearchSettings(), **json.loads(spec))
        rates = []
        for _ in range(2):
            t0 = time.perf_counter()
            got = ann.nearest_names(queries, 20)
            rates.append(len(queries) / (time.perf_counter() - t0))
        rows.append({"settings": asdict(ann.ann), "changed": json.loads(spec), "queries_per_s": rates[-1],
                     "cold_queries_per_s": rates[0], "recall_at_20": recall_of_exact(want, got)})
        print(json.dumps(rows[-1]), flush=True)
    command = "python bench/ann_settings.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(args.json, {"command": command, "kb": str(args.kb), "names": kb.num_names,
                                  "queries": len(queries), "machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

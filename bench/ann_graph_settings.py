"""ANN graph build settings side by side on one KB folder: build time and peak, then search speed and recall.

For each ``--graph`` setting (JSON: ``GraphSettings`` fields, ``{}`` = the defaults) the graph is built again,
in a fresh process, over the TF-IDF index of ``--kb`` (a ``kb build --index`` folder of ``bench/kb_scale.py``),
into a folder of its own that links to the KB's other files. Then ``bench/ann_settings.py`` measures the
default search and the graph alone (``rare_budget`` 0) on it. What the graph's defaults were checked with:

    python bench/ann_graph_settings.py --kb .cache/bench/kb_scale/kb-6000000 --graph '{"expansion_add": 32}' \
        --json docs/results/ann_graph_settings_6m.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, REPO, machine, peak_rss_mb, write_json_atomic  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="a KB folder written with kb build --index")
    p.add_argument("--graph", nargs="+", required=True, help="JSON objects: GraphSettings fields ({} = defaults)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_CACHE / "ann_graph_settings")
    p.add_argument("--queries", type=int, default=960, help="NCBI-disease dev mentions used as queries")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_worker(folder: str, spec: str) -> Dict[str, Any]:
    """Build and save one graph (in this fresh process: its peak is the build's)."""
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.ann_search import GraphSettings
    from spacy_angel.retrieval.tfidf import NameIndex

    t0 = time.perf_counter()
    index = NameIndex.from_disk(folder, KnowledgeBase.from_disk(folder)).build_ann(GraphSettings(**json.loads(spec)))
    built = time.perf_counter() - t0
    index.save_ann(folder)
    return {"graph_build_s": built, "graph_build_and_save_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def folder_for(kb: Path, work: Path, spec: Dict[str, Any]) -> Path:
    """A folder of links to ``kb``'s files but its graph (so each setting writes its own graph)."""
    name = "-".join(f"{k}{v}" for k, v in sorted(spec.items())) or "defaults"
    folder = work / f"{kb.name}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in kb.iterdir():
        link = folder / path.name
        if path.is_file() and not path.name.startswith("tfidf-ann") and not link.exists():
            os.symlink(path.resolve(), link)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(build_worker(*args.worker)))
        return 0
    from dataclasses import asdict

    from spacy_angel.retrieval.ann_search import GraphSettings

    rows: List[Dict[str, Any]] = []
    for spec in args.graph:
        changed = json.loads(spec)
        folder = folder_for(args.kb, args.work_dir, changed)
        proc = subprocess.run([sys.executable, __file__, "--kb", str(args.kb), "--graph", spec, "--json", "-",
                               "--worker", str(folder), spec],
                              capture_output=True, text=True, cwd=str(REPO), check=True)
        built = json.loads(proc.stdout.strip().splitlines()[-1])
        search = args.work_dir / f"{folder.name}.search.json"
        subprocess.run([sys.executable, str(Path(__file__).with_name("ann_settings.py")), "--kb", str(folder),
                        "--queries", str(args.queries), "--grid", "{}", '{"rare_budget": 0}', "--json", str(search)],
                       check=True, cwd=str(REPO))
        found = json.loads(search.read_text(encoding="utf-8"))["rows"]
        rows.append({"graph": asdict(GraphSettings(**changed)), "changed": changed, **built,
                     "queries_per_s": found[0]["queries_per_s"], "recall_at_20": found[0]["recall_at_20"],
                     "graph_alone_recall_at_20": found[1]["recall_at_20"], "search": found[0]["settings"]})
        print(json.dumps(rows[-1]), flush=True)
    command = "python bench/ann_graph_settings.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(args.json, {"command": command, "kb": str(args.kb), "queries": args.queries,
                                  "machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

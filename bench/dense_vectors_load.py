"""Loading a KB's dense name vectors: encoded anew (before this round, on every load) vs mapped from the
file written beside the KB (``spacy_angel.retrieval.dense_index.name_vectors``), side by side in one run.

Each way runs ``--repeats`` times in a fresh process (so no page or import cache of the other way is
shared in Python), the file being written once before the mapped runs; reported: median seconds and the
process's RSS growth while loading (``psutil``), and the ratio. The mapped runs' pages are the page
cache's, shared by every process that maps the file.

Usage: python bench/dense_vectors_load.py --kb KB_DIR --encoder MODEL/name_encoder [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

_CHILD = r"""
import json, sys, time, psutil
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.dense_index import name_vectors
from spacy_angel.retrieval.name_encoder import NameEncoder
kb = KnowledgeBase.from_disk(sys.argv[1]); encoder = NameEncoder.from_disk(sys.argv[2])
cache = None if sys.argv[3] == "-" else sys.argv[3]
kb.fingerprint()  # both ways need it; not what is compared
proc = psutil.Process(); before = proc.memory_info().rss
start = time.perf_counter(); vectors = name_vectors(kb, encoder, cache); float(vectors[-1].sum())
print(json.dumps({"seconds": time.perf_counter() - start, "rss_growth_mb": (proc.memory_info().rss - before) / 2**20,
                  "shape": list(vectors.shape)}))
"""


def _run(kb: Path, encoder: Path, cache: str) -> Dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(kb), str(encoder), cache], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb", type=Path, required=True, help="KB directory (kb build)")
    parser.add_argument("--encoder", type=Path, required=True, help="a name encoder folder (MODEL/name_encoder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cache = Path(tempfile.mkdtemp(prefix="dense-vectors-"))
    try:
        encoded: List[Dict[str, float]] = [_run(args.kb, args.encoder, "-") for _ in range(args.repeats)]
        _run(args.kb, args.encoder, str(cache))  # writes the file
        mapped = [_run(args.kb, args.encoder, str(cache)) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    med = lambda rows, key: round(statistics.median(r[key] for r in rows), 3)  # noqa: E731
    report = {
        "command": "python bench/dense_vectors_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "names": encoded[0]["shape"][0], "dim": encoded[0]["shape"][1],
        "encoded": {"seconds": med(encoded, "seconds"), "rss_growth_mb": med(encoded, "rss_growth_mb")},
        "mapped": {"seconds": med(mapped, "seconds"), "rss_growth_mb": med(mapped, "rss_growth_mb")},
    }
    report["speedup"] = round(report["encoded"]["seconds"] / max(report["mapped"]["seconds"], 1e-9), 1)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

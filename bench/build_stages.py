"""Peak RSS and seconds of ``kb build`` per stage: where the build's memory goes (issue 27's 4 GB target at 6M names).

A thread samples the process's RSS every 20 ms; each stage of ``spacy_angel.retrieval.kb_build.build_kb``
(reading the sources, writing the KB's tables, mapping the KB, fitting the TF-IDF index, writing it) is
labelled by wrapping its function, and ``<stage>.after`` covers what runs after a stage returns and
before the next one starts (the streamed postings are produced while ``to_disk`` writes them, so they
fall under ``streamed_postings.after``). Sampling can miss a spike shorter than 20 ms.

    .venv/bin/python bench/build_stages.py .cache/bench/kb_scale/names-6000000.tsv /tmp/kb-6m
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Dict, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a TSV of (id, name), e.g. one bench/kb_scale.py wrote")
    p.add_argument("output", help="the KB folder to (over)write")
    args = p.parse_args(argv)
    import psutil

    process, peaks, stage = psutil.Process(), {}, ["imports"]  # type: ignore[var-annotated]
    seconds_by_stage: Dict[str, float] = {}
    entered = [time.perf_counter()]

    def enter(tag: str) -> None:
        now = time.perf_counter()
        seconds_by_stage[stage[0]] = seconds_by_stage.get(stage[0], 0.0) + now - entered[0]
        stage[0], entered[0] = tag, now

    def sample() -> None:
        while True:
            peaks[stage[0]] = max(peaks.get(stage[0], 0), process.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    import spacy_angel.retrieval.kb_build as kb_build
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval import tfidf

    def label(owner: object, name: str, tag: str) -> None:
        function = getattr(owner, name)

        def labelled(*a, **k):
            enter(tag)
            try:
                return function(*a, **k)
            finally:
                enter(tag + ".after")
        setattr(owner, name, labelled)

    for owner, name in ((kb_build, "load_files"), (KnowledgeBase, "write_files"), (KnowledgeBase, "from_disk"),
                        (tfidf.NameIndex, "fit"), (tfidf.NameIndex, "to_disk"), (tfidf, "streamed_postings")):
        label(owner, name, name)
    enter("start")
    t0 = time.perf_counter()
    kb_build.build_kb([args.source], args.output, format="tsv", overwrite=True, index=True)
    seconds = time.perf_counter() - t0
    enter("end")
    time.sleep(0.1)
    result: Dict[str, object] = {"build_s": round(seconds, 1),
                                 "seconds_by_stage": {k: round(v, 1) for k, v in seconds_by_stage.items()},
                                 "peak_rss_mb_by_stage": {k: round(v / 1e6) for k, v in peaks.items()}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

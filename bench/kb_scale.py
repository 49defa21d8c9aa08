"""KB scale: build, load, memory shared between workers, retrieval and linking speed, per KB size.

One run, sizes one after the other on the same machine. Names: MEDIC 2017's 76,781 real disease names
first, then **synthetic** variants up to the size (a MEDIC name's words shuffled, a word of another MEDIC
name inserted 7 times in 10, kept under the base name's concept id, as UMLS keeps word-order and
qualified variants of one concept). The synthetic names are harder than UMLS for retrieval: each base
name has many near-identical variants, so the exact top-20 is a large tie-prone set.

Per size, each step in a fresh process, so one step's memory is not counted in the next. Before the
load, share, retrieval and linking steps every file of the KB folder and its trie is read once
(``page_cache_warm_s``): they run on a warm page cache, a serving process's steady state. Without it the
rates depended on whether an earlier size had pushed the files out of the cache (2x at 2M names).

* ``build``: ``spacy-angel kb build --index --ann`` on a TSV of the names: seconds (the ANN graph's
  share apart, ``ann_build_s``) and peak RSS;
* ``load``: KB + TF-IDF index + ANN graph from the KB folder (memory-mapped): seconds and RSS;
* ``share``: two processes load it and touch every index page; the second one's PSS (its fair share,
  counting shared pages once across both) against its RSS;
* ``retrieval``: top-20 for the NCBI-disease dev mentions (raw surfaces) with exact, pruned
  (``spacy_angel.retrieval.pruned_search``) and ANN search (``spacy_angel.retrieval.ann_search``):
  queries/s (ANN: the median of 3 passes over the queries, each pass's rate in ``ann_pass_qps``) and
  recall@20 of exact (``ann_search.recall_of_exact``: the share of the exact top-20 found,
  names of equal cosine interchangeable). ``retrieval_qps`` / ``recall_at_20`` are the ANN search's;
  ``*_rank_aligned`` keeps the stricter measure of earlier rounds (the found cosine at each rank at least
  the exact one there: one missed name fails every later rank whose cosine drops);
* ``linking``: beam and hybrid mentions/s, the median of 3 runs (``AngelLinker.link``, 5 beams, batch 32,
  hybrid candidates from ANN search) with ``--model`` (default: an untrained ``init-model --size small``,
  the cpu-ncbi recipe's shape: speed only).

    .venv/bin/python bench/kb_scale.py --sizes 100000,1000000 --json docs/results/kb_scale.json

``--reuse-builds`` keeps each size's KB folder and build figures from the JSON; ``--rebuild SIZES`` builds
those sizes again all the same (after a change to the build code checked at those sizes).

Writes the JSON (a list of per-size records, plus the machine) and the "KB scale" section of
docs/performance.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    DEFAULT_CACHE,
    REPO,
    TreeMemoryPeak,
    anon_rss_mb,
    current_rss_mb,
    machine,
    median,
    peak_rss_mb,
    rank_aligned_recall,
    write_json_atomic,
)

DOC_BEGIN, DOC_END = "<!-- bench/kb_scale.py: begin -->", "<!-- bench/kb_scale.py: end -->"
MEDIC = DATA / "medic" / "CTD_diseases_2017.tsv.gz"
QUERIES = DATA / "biosyn" / "ncbi-disease" / "processed_dev"  # dev: the search settings were chosen on these


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated KB sizes (names)")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "kb_scale.json")
    p.add_argument("--doc", default=str(REPO / "docs" / "performance.md"), help="'' to skip")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE / "kb_scale")
    p.add_argument("--model", type=Path, default=None, help="model directory for beam/hybrid (default: untrained small)")
    p.add_argument("--queries", type=int, default=960, help="NCBI-disease dev mentions used as queries")
    p.add_argument("--mentions", type=int, default=256, help="mentions linked for beam/hybrid speed")
    p.add_argument("--query-mass", type=float, default=0.9)
    p.add_argument("--rescore-depth", type=int, default=400)
    p.add_argument("--skip-exact-above", type=int, default=3_000_000,
                   help="exact and pruned retrieval on a query sample of 128 above this size (their rates are flat per query)")
    p.add_argument("--from-json", action="store_true", help="only re-render --doc from the records in --json")
    p.add_argument("--reuse-builds", action="store_true",
                   help="keep each size's KB folder and its build figures from the record of that size in --json "
                        "(the build code unchanged since), rerun the other steps")
    p.add_argument("--rebuild", default="", help="with --reuse-builds: comma-separated sizes built again all the "
                                                "same (the build code changed where only these sizes are checked)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- names
def base_names() -> List[tuple]:
    from spacy_angel.kb.readers import load_files

    kb = load_files([MEDIC])
    return [(cid, name) for cid, name in kb]


def write_source(path: Path, size: int) -> str:
    """A TSV (id, name) of ``size`` distinct names: MEDIC's, then synthetic variants (seed 0)."""
    pairs, seen = [], set()
    for cid, name in base_names():  # one pair per distinct name (a name of two concepts keeps the first)
        if name not in seen:
            seen.add(name)
            pairs.append((cid, name))
    rng = random.Random(0)
    words = sorted({w for _, n in pairs for w in n.split()})
    out = list(pairs[:size])
    while len(out) < size:
        cid, name = pairs[rng.randrange(len(pairs))]
        tokens = name.split()
        rng.shuffle(tokens)
        if rng.random() < 0.7:
            tokens.insert(rng.randrange(len(tokens) + 1), words[rng.randrange(len(words))])
        variant = " ".join(tokens)
        if variant not in seen:
            seen.add(variant)
            out.append((cid, variant))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{cid}\t{name}\n" for cid, name in out)
    os.replace(tmp, path)
    return f"{min(size, len(pairs))} MEDIC names + {max(0, size - len(pairs))} synthetic variants"


def read_queries(limit: int) -> List[str]:
    queries = []
    for f in sorted(glob.glob(str(QUERIES / "*.concept"))):
        with open(f, encoding="utf-8") as fh:
            queries.extend(line.split("||")[3] for line in fh if line.count("||") >= 4)
    return queries[:limit]


# ---------------------------------------------------------------------------- workers (fresh processes)
def worker_build(source: str, out: str) -> Dict[str, Any]:
    """``kb build --index --ann`` (what :func:`build_kb` with ``ann=True`` does), timed in its two parts."""
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.kb_build import build_kb
    from spacy_angel.retrieval.tfidf import NameIndex

    with TreeMemoryPeak() as tree:
        t0 = time.perf_counter()
        build_kb([source], out, format="tsv", overwrite=True, index=True)
        t1 = time.perf_counter()
        index = NameIndex.from_disk(out, KnowledgeBase.from_disk(out)).build_ann()
        index.save_ann(out)
        t2 = time.perf_counter()
    # the TF-IDF fit forks workers: the peak is this process's or, if larger, the sampled sum of RSS over
    # it and its children (an upper bound: pages they share count twice); the sum of PSS beside it
    own = peak_rss_mb()
    return {"build_s": t2 - t0, "ann_build_s": t2 - t1, "build_peak_rss_mb": max(own, tree.rss_mb),
            "build_peak_self_rss_mb": own, "build_peak_pss_mb": tree.pss_mb,
            "ann_graph_nodes": len(index.graph.graph), "ann_twin_names": len(index.graph.twins.names)}


def _load(kb_dir: str, **settings: Any):
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.retrieval.tfidf import NameIndex

    kb = KnowledgeBase.from_disk(kb_dir)
    return kb, NameIndex.from_disk(kb_dir, kb, search="ann", **settings)


def _pss_rss_mb() -> Dict[str, float]:
    values = {}
    with open("/proc/self/smaps_rollup", encoding="utf8") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key.lower() + "_mb"] = int(rest.split()[0]) / 1024
    return values


def worker_share(kb_dir: str) -> Dict[str, Any]:
    """Load, touch every mapped index page, report, then wait for a line (so two live side by side), report
    again and wait for a last line before exiting: a worker that exits while the other reads its PSS
    unmaps pages mid-count (the cause of the unstable 401 / 614 MB of earlier runs)."""
    import numpy as np

    kb, index = _load(kb_dir)
    float(np.asarray(index.matrix.data).sum() + np.asarray(index.postings.data).sum())
    index.nearest_names(["breast cancer"] * 64, 20)  # some graph pages too (a walk touches a few of them)
    index.nearest_names(["breast cancer"], 5)
    print(json.dumps(_pss_rss_mb()), flush=True)
    sys.stdin.readline()
    print(json.dumps(_pss_rss_mb()), flush=True)
    sys.stdin.readline()
    return {}


BUILD_KEYS = ("build_s", "ann_build_s", "build_peak_rss_mb", "build_peak_self_rss_mb", "build_peak_pss_mb",
              "ann_graph_nodes", "ann_twin_names")


def worker_query(kb_dir: str, queries_json: str, mass: str, depth: str, exact_sample: str) -> Dict[str, Any]:
    from spacy_angel.retrieval.ann_search import recall_of_exact

    t0 = time.perf_counter()
    kb, ann = _load(kb_dir)
    load_s = time.perf_counter() - t0
    rss = current_rss_mb()
    queries = json.loads(Path(queries_json).read_text())
    searches = {name: type(ann)(kb, search=name, query_mass=float(mass), rescore_depth=int(depth))
                for name in ("exact", "pruned")}
    for index in searches.values():
        index.vectorizer, index.matrix, index._postings = ann.vectorizer, ann.matrix, ann.postings
    searches["ann"] = ann
    sample = queries[: int(exact_sample)] if int(exact_sample) else queries
    out: Dict[str, Any] = {"load_s": load_s, "rss_mb": rss, "exact_queries": len(sample), "queries": len(queries)}
    hits = {}
    for name, index in searches.items():
        asked = queries if name == "ann" else sample  # above --skip-exact-above pruned is as slow as exact
        index.nearest_names(asked[:8], 20)
        rates = []
        for _ in range(3 if name == "ann" else 1):  # ANN: the median of 3 passes (one pass moved 15-30% run to run)
            t0 = time.perf_counter()
            hits[name] = index.nearest_names(asked, 20)
            rates.append(len(asked) / (time.perf_counter() - t0))
        out[f"{name}_qps"] = median(rates)
        if name == "ann":
            out["ann_pass_qps"] = rates
    for name in ("pruned", "ann"):
        out[f"{name}_recall_at_20"] = recall_of_exact(hits["exact"], hits[name][: len(sample)])
        out[f"{name}_recall_at_20_rank_aligned"] = rank_aligned_recall(hits["exact"], hits[name][: len(sample)])
    return {**out, "retrieval_qps": out["ann_qps"], "recall_at_20": out["ann_recall_at_20"],
            "query_rss_mb": current_rss_mb()}


def worker_link(kb_dir: str, model_dir: str, queries_json: str, mentions: str) -> Dict[str, Any]:
    import torch

    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.retrieval.tfidf import load_or_build_index
    from spacy_angel.types import Mention

    torch.set_num_threads(2)
    kb = KnowledgeBase.from_disk(kb_dir)
    t0 = time.perf_counter()
    linker = AngelLinker.from_pretrained(model_dir, kb, trie_path=Path(kb_dir).parent / (Path(kb_dir).name + "-trie"),
                                         device="cpu", num_beams=5, batch_size=32, index_dir=kb_dir,
                                         retriever=lambda kb, path: load_or_build_index(kb, path, search="ann"))
    trie_s = time.perf_counter() - t0
    linker.name_index  # loaded on first use: load it here, so the RSS below is the whole loaded pipeline
    loaded = {"pipeline_rss_mb": current_rss_mb(), "pipeline_anon_mb": anon_rss_mb()}
    surfaces = json.loads(Path(queries_json).read_text())[: int(mentions)]
    batch = [Mention(doc_id=str(i), text=s, start=0, end=len(s)) for i, s in enumerate(surfaces)]
    rates = {}
    for mode in ("beam", "hybrid"):
        linker.link(batch[:8], top_k=5, mode=mode)
        seconds = []
        for _ in range(3):  # the median of 3 runs, each with an empty result cache
            linker.clear_cache()
            t0 = time.perf_counter()
            linker.link(batch, top_k=5, mode=mode)
            seconds.append(time.perf_counter() - t0)
        rates[f"{mode}_per_s"] = len(batch) / median(seconds)
    return {**rates, **loaded, "linking_runs": 3, "trie_load_or_build_s": trie_s, "link_rss_mb": current_rss_mb(),
            "link_anon_mb": anon_rss_mb()}


def run(args: List[str], timeout: float = 3600) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.strip()][-1])


def warm_page_cache(folders: Sequence[Path]) -> float:
    """Read every file of ``folders`` once, so the timed steps find them in the page cache; returns seconds.

    Why: the steps map the KB's files and read them at random. Whether an earlier size's files pushed them
    out of the cache decided the rates: the same 2M-name search ran at 476 queries/s right after its build
    had been evicted and at 945 a minute later. Warm is a serving process's steady state."""
    t0 = time.perf_counter()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                with open(path, "rb") as fh:
                    while fh.read(64 << 20):
                        pass
    return time.perf_counter() - t0


def share(kb_dir: Path) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "share", str(kb_dir)]
    first = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    alone = json.loads(first.stdout.readline())
    second = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    json.loads(second.stdout.readline())
    for p in (first, second):
        p.stdin.write("\n")
        p.stdin.flush()
    first_now, second_now = json.loads(first.stdout.readline()), json.loads(second.stdout.readline())
    for p in (first, second):  # both measured: now they may exit
        p.stdin.write("\n")
        p.stdin.flush()
    for p in (first, second):
        p.wait(timeout=60)
    return derive({"one_worker_rss_mb": alone["rss_mb"], "one_worker_pss_mb": alone["pss_mb"],
                   "second_worker_rss_mb": second_now["rss_mb"], "second_worker_own_pss_mb": second_now["pss_mb"],
                   "first_worker_pss_mb_with_two": first_now["pss_mb"]})


def derive(record: Dict[str, Any]) -> Dict[str, Any]:
    """``second_worker_pss_mb``: what a second worker adds to the machine's memory, i.e. the PSS of both
    workers together minus the PSS of one alone (a shared page moves from one worker's PSS to half in each)."""
    own = record.get("second_worker_own_pss_mb", record.get("second_worker_pss_mb"))
    if "first_worker_pss_mb_with_two" in record and own is not None:
        record["second_worker_own_pss_mb"] = own
        record["second_worker_pss_mb"] = record["first_worker_pss_mb_with_two"] + own - record["one_worker_pss_mb"]
    return record


def ann_settings() -> str:
    from dataclasses import asdict

    from spacy_angel.retrieval.ann_search import AnnSearchSettings, GraphSettings

    return "graph: " + ", ".join(f"{k} {v}" for k, v in asdict(GraphSettings()).items()) + "; search: " + \
        ", ".join(f"{k} {v}" for k, v in asdict(AnnSearchSettings()).items())


# ---------------------------------------------------------------------------- report
def markdown(records: List[Dict[str, Any]], command: str) -> str:
    rows = ["| names | kb build (ANN graph) | build peak RSS | load | RSS loaded: index (pipeline) "
            "| 2nd worker PSS (RSS) | exact q/s "
            "| pruned q/s (recall@20) | **ANN q/s** | **ANN recall@20** (rank-aligned) | beam /s | hybrid /s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        rows.append(f"| {r['names']:,} | {r['build_s']:.0f} s ({r['ann_build_s']:.0f} s) | {r['build_peak_rss_mb']:.0f} MB "
                    f"| {r['load_s']:.2f} s | {r['rss_mb']:.0f} MB ({_num(r.get('pipeline_rss_mb'), ' MB')}) "
                    f"| {r['second_worker_pss_mb']:.0f} MB ({r['second_worker_rss_mb']:.0f} MB) | {r['exact_qps']:.0f} "
                    f"| {r['pruned_qps']:.0f} ({100 * r['pruned_recall_at_20']:.2f}%) | **{r['ann_qps']:.0f}** "
                    f"| **{100 * r['ann_recall_at_20']:.2f}%** ({100 * r['ann_recall_at_20_rank_aligned']:.2f}%) "
                    f"| {_num(r.get('beam_per_s'))} | {_num(r.get('hybrid_per_s'))} |")
    report, m = records[0], records[0]["machine"]
    names_note = "; ".join(f"{r['names']:,}: {r['names_note']}" for r in records)
    return "\n".join([
        DOC_BEGIN, "## KB scale: build, load, shared memory, retrieval and linking per KB size", "",
        f"Command: {commands(records, command)} (JSON: `docs/results/kb_scale.json`). Machine: {m.get('Model name', '?')}, "
        f"{m.get('nproc', m.get('cpus'))} cores; every step in a fresh process; "
        + ("load, retrieval and linking on a warm page cache (every file of the KB folder and its trie read once "
           "before them; a record without `page_cache_warm_s` did not)."
           if any("page_cache_warm_s" in r for r in records) else "page cache not controlled."),
        f"Names: {names_note}. Queries: {report['queries']} NCBI-disease dev mentions (raw surfaces). "
        f"Pruned search: query_mass {report['query_mass']}, rescore_depth {report['rescore_depth']}. ANN search: "
        f"`spacy_angel.retrieval.ann_search` defaults ({report.get('ann_settings', 'not recorded')}). "
        f"ANN q/s: the median of 3 passes over the queries. Recall@20: the share of the exact top-20 found "
        f"(equal cosines interchangeable); in brackets the stricter rank-aligned measure of earlier rounds. "
        f"Linking: {report['model']}, 5 beams, batch 32, {report['mentions']} mentions without context, hybrid "
        f"candidates from ANN search; mentions/s: the median of 3 runs (a record without `linking_runs` had one).", "",
        *rows, "",
        *(["ANN graph nodes (one per distinct TF-IDF vector; the other names are twins listed beside it): "
            + "; ".join(f"{r['names']:,} names: {r['ann_graph_nodes']:,} nodes" for r in records if "ann_graph_nodes" in r)
            + ".", ""] if any("ann_graph_nodes" in r for r in records) else []),
        "PSS counts a page shared by two processes half in each; '2nd worker PSS' is what a second worker adds (PSS of both minus PSS of one alone), beside its RSS.",
        "RSS loaded: the KB and its index just loaded (the query step), and in brackets the whole linking "
        "pipeline (KB, index, model, trie) just loaded (the linking step). After linking, RSS grows by mapped "
        "page-cache pages (shared, reclaimable; the kernel maps cached pages around each one read), while the "
        "private part (`RssAnon`) stays small"
        + (": " + "; ".join(f"{r['names']:,} names: RSS {r['link_rss_mb']:.0f} MB, private {r['link_anon_mb']:.0f} MB"
                             for r in records if "link_anon_mb" in r) + "." if any("link_anon_mb" in r for r in records)
           else " (not recorded in these records)."),
        "", *targets(records[-1]), DOC_END])


#: issue 27's targets at 6M names: (label, record key, bound, higher is better)
TARGETS = (("retrieval queries/s (ANN)", "retrieval_qps", 2000, True), ("ANN recall@20", "recall_at_20", 0.99, True),
           ("hybrid mentions/s", "hybrid_per_s", 100, True), ("KB + index load s", "load_s", 10, False),
           ("pipeline RSS loaded MB", "pipeline_rss_mb", 2000, False),
           ("second worker PSS MB", "second_worker_pss_mb", 300, False),
           ("kb build s", "build_s", 600, False), ("kb build peak RSS MB", "build_peak_rss_mb", 4000, False))


def targets(record: Dict[str, Any]) -> List[str]:
    """The issue's 6M-name targets against the largest size measured (which may be smaller: say so)."""
    lines = [f"Targets (set for 6,000,000 names) at the largest size measured here, {record['names']:,} names:", ""]
    for label, key, bound, higher in TARGETS:
        value = record.get(key)
        if value is None:
            lines.append(f"- {label}: not measured")
            continue
        met = value >= bound if higher else value <= bound
        lines.append(f"- {label}: {value:.3g} ({'met' if met else 'NOT met'}; target {'≥' if higher else '≤'} {bound})")
    return lines


def commands(records: List[Dict[str, Any]], fallback: str) -> str:
    """The command of each row (a size may come from a rerun; its record says why in ``note``), and where
    reused build figures come from."""
    seen = list(dict.fromkeys(r.get("command", fallback) for r in records))
    notes = "".join(f". {r['names']:,} names: {r['note']}" for r in records if r.get("note"))
    for source in dict.fromkeys(r["build_from"] for r in records if r.get("build_from")):
        sizes = ", ".join(f"{r['names']:,}" for r in records if r.get("build_from") == source)
        notes += f". The build columns of {sizes} names come from `{source}` (`--reuse-builds`; the build code unchanged)"
    if len(seen) == 1:
        return f"`{seen[0]}`" + notes
    parts = []
    for command in seen:
        sizes = ", ".join(f"{r['names']:,}" for r in records if r.get("command", fallback) == command)
        parts.append(f"`{command}` ({sizes} names)")
    return "; ".join(parts) + notes


def _num(value: Optional[float], unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.0f}{unit}"


def update_doc(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if DOC_BEGIN in text:
        text = text[: text.index(DOC_BEGIN)] + section + text[text.index(DOC_END) + len(DOC_END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    from spacy_angel.fileio import atomic_write_text

    atomic_write_text(path, text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        name, *rest = args.worker
        result = {"build": worker_build, "share": worker_share, "query": worker_query, "link": worker_link}[name](*rest)
        print(json.dumps(result), flush=True)
        return 0
    if args.from_json:
        records = [derive(r) for r in json.loads(args.json.read_text(encoding="utf-8"))]
        write_json_atomic(args.json, records)
        command = records[0].get("command", "python bench/kb_scale.py")
        update_doc(Path(args.doc), markdown(records, command))
        return 0
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    queries_json = args.cache_dir / "queries.json"
    queries_json.write_text(json.dumps(read_queries(args.queries)))
    model = args.model
    if model is None:
        from common import cached_kb, cached_model

        kb, kb_path = cached_kb(MEDIC, args.cache_dir)
        model = cached_model(kb, kb_path, args.cache_dir, size="small")
    settings: Dict[str, Any] = {"machine": machine(), "queries": args.queries, "query_mass": args.query_mass,
                                "rescore_depth": args.rescore_depth, "mentions": args.mentions,
                                "model": str(args.model) if args.model else "untrained init-model --size small",
                                "ann_settings": ann_settings()}
    records: List[Dict[str, Any]] = []
    notes = []
    previous = {r["names"]: r for r in json.loads(args.json.read_text(encoding="utf-8"))} if args.reuse_builds else {}
    rebuild = {int(s) for s in args.rebuild.split(",") if s.strip()}
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        source, kb_dir = args.cache_dir / f"names-{size}.tsv", args.cache_dir / f"kb-{size}"
        notes.append(write_source(source, size))
        command = "python bench/kb_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
        record: Dict[str, Any] = {"names": size, "names_note": notes[-1], "command": command, **settings}
        if args.reuse_builds and size in previous and kb_dir.is_dir() and size not in rebuild:
            record.update({k: previous[size][k] for k in BUILD_KEYS if k in previous[size]},
                          build_from=previous[size].get("build_from", previous[size]["command"]))
        else:
            record.update(run(["build", str(source), str(kb_dir)]))
        record["page_cache_warm_s"] = warm_page_cache([kb_dir, args.cache_dir / f"kb-{size}-trie"])
        exact_sample = "128" if size > args.skip_exact_above else "0"
        record.update(run(["query", str(kb_dir), str(queries_json), str(args.query_mass), str(args.rescore_depth),
                           exact_sample]))
        record.update(share(kb_dir))
        record.update(run(["link", str(kb_dir), str(model), str(queries_json), str(args.mentions)]))
        records.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)
        write_json_atomic(args.json, records)
    if args.doc:
        update_doc(Path(args.doc), markdown(records, command))
    print(markdown(records, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

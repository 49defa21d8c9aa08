"""Scale-out: mentions/s of ``nlp.pipe`` (n_process 1 and 2) and ``link --engine ray`` (1 and 2 workers).

Links the NCBI-disease test documents (MEDIC KB, one model) repeated to ``--mentions`` mentions, on
the CPU, one engine after the other in ONE run, every worker on one torch thread, so each engine's
rate per core is comparable. Prints the 2-worker / 1-worker ratio and, from the measured rate of
one core, the machine-hours to link all of PubMed; writes ``docs/results/scale.json`` and the
"Scale-out" section of ``docs/performance.md``.

Why every repeat is made distinct: the linker decodes identical (mention, context) inputs once
(and caches them), so plain copies of the documents would time dictionary look-ups. Each copy
gets a tag right after every mention (``breast cancer (r12)``): a few more input tokens, no
shared inputs.

Rates are *linking* rates with the model loaded: ``nlp.pipe`` is timed after loading and a
warm-up; Ray is timed by its actors' busy time (the slowest actor), so Ray's and the actors'
start-up (a fixed cost per job, shown as ``startup_s``) is left out, as it vanishes at corpus scale.

    .venv/bin/python bench/scale.py [--mentions 20000] [--model DIR] [--engines pipe1,pipe2,ray1,ray2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_setup_arguments,
    REPO,
    cached_kb,
    cached_model,
    machine,
    write_json_atomic,
)

PUBMED_ABSTRACTS = 36_000_000  # PubMed citations with an abstract, order of magnitude (2024-25)
ENGINES = ("pipe1", "pipe2", "ray1", "ray2")
DOC_BEGIN, DOC_END = "<!-- bench/scale.py: begin -->", "<!-- bench/scale.py: end -->"

Doc = Tuple[str, str, List[Tuple[int, int]]]  # (id, text, [(start, end)])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(p, "PubTator documents to link (repeated)")
    p.add_argument("--mentions", type=int, default=20_000, help="at least this many mentions (documents repeated)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="mentions per decoder batch (every engine)")
    p.add_argument("--mode", default=None, help="linker mode for every engine (default: the runtime's default)")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "scale.json", help="results file")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "performance.md", help="markdown file whose Scale-out section is (re)written")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def read_documents(corpus: Path) -> Tuple[List[Doc], int]:
    """NCBI documents with their mention spans (non-overlapping, as ``doc.ents`` needs); and the mention count read."""
    from training.data.corpora import read_pubtator

    docs: Dict[str, Doc] = {}
    read = 0
    for m in read_pubtator(corpus):
        read += 1
        doc = docs.setdefault(m.doc_id, (m.doc_id, m.text, []))
        doc[2].append((m.start, m.end))
    out = []
    for doc_id, text, spans in docs.values():
        kept: List[Tuple[int, int]] = []
        for start, end in sorted(set(spans)):
            if not kept or start >= kept[-1][1]:
                kept.append((start, end))
        out.append((doc_id, text, kept))
    return out, read


def repeat_documents(docs: Sequence[Doc], min_mentions: int) -> List[Doc]:
    """Copies of ``docs`` until ``min_mentions``; copy r tags every mention with `` (rR)`` (see module doc)."""
    out: List[Doc] = []
    total, r = 0, 0
    while total < min_mentions:
        for doc_id, text, spans in docs:
            pieces, new_spans, pos, shift = [], [], 0, 0
            for start, end in spans:
                tag = f" (r{r})"
                pieces.append(text[pos:end] + tag)
                new_spans.append((start + shift, end + shift))
                shift += len(tag)
                pos = end
            pieces.append(text[pos:])
            out.append((f"{doc_id}-r{r}", "".join(pieces), new_spans))
            total += len(spans)
            if total >= min_mentions:
                break
        r += 1
    return out


# ----------------------------------------------------------------------------- engines
def run_pipe(docs: Sequence[Doc], model_dir: Path, kb_path: Path, args: argparse.Namespace, n_process: int) -> Dict[str, Any]:
    import spacy
    import torch

    torch.set_num_threads(1)
    nlp = spacy.blank("en")
    config = {"model": str(model_dir), "kb": str(kb_path), "device": "cpu", "num_beams": args.num_beams,
              "top_k": args.top_k, "batch_size": args.batch_size, **({"mode": args.mode} if args.mode else {})}
    nlp.add_pipe("angel_linker", config=config)

    def make(doc: Doc):
        d = nlp.make_doc(doc[1])
        d.ents = [d.char_span(s, e, label="DISEASE", alignment_mode="expand") for s, e in doc[2]]
        return d

    started = time.perf_counter()
    list(nlp.pipe([make(d) for d in docs[:5]]))  # load the model, build the trie, warm up
    nlp.get_pipe("angel_linker").linker.clear_cache()  # else the warm-up documents would be cache hits
    startup = time.perf_counter() - started
    inputs = [make(d) for d in docs]
    # ~8 batches per process keep the workers equally busy to the end
    per_batch = max(1, len(inputs) // (8 * n_process))
    started = time.perf_counter()
    out = list(nlp.pipe(inputs, n_process=n_process, batch_size=per_batch))
    seconds = time.perf_counter() - started
    top1 = {(i, e.start_char): (e._.kb_ents[0][0] if e._.kb_ents else None) for i, d in enumerate(out) for e in d.ents}
    return {"mentions": sum(len(d.ents) for d in out), "seconds": seconds, "startup_s": startup,
            "_top1": [top1[k] for k in sorted(top1)]}


def run_ray(docs: Sequence[Doc], model_dir: Path, kb_path: Path, args: argparse.Namespace, workers: int, tmp: Path) -> Dict[str, Any]:
    from spacy_angel.apps.ray_linking import link_corpus

    src, out = tmp / f"ray{workers}-in", tmp / f"ray{workers}-out"
    src.mkdir()
    with (src / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for doc_id, text, spans in docs:
            fh.write(json.dumps({"id": doc_id, "text": text, "spans": [{"start": s, "end": e} for s, e in spans]}) + "\n")
    shard_size = max(1, len(docs) // (8 * workers))  # ~8 shards per worker
    started = time.perf_counter()
    report = link_corpus(str(model_dir), str(kb_path), str(src), out, workers=workers, shard_size=shard_size,
                         num_beams=args.num_beams, top_k=args.top_k, batch_size=args.batch_size, device="cpu",
                         progress=False, **({"mode": args.mode} if args.mode else {}))
    wall = time.perf_counter() - started
    busy = max(report["busy"].values())
    index = {doc_id: i for i, (doc_id, _, _) in enumerate(docs)}
    records = sorted((json.loads(line) for f in out.glob("*.jsonl") for line in f.open(encoding="utf-8")),
                     key=lambda r: (index[r["id"]], r["start"]))
    return {"mentions": report["mentions"], "seconds": busy, "wall_s": wall, "startup_s": wall - busy,
            "shards": report["shards"], "_top1": [r["candidates"][0]["ids"][0] if r["candidates"] else None for r in records]}


# ----------------------------------------------------------------------------- report
def machine_info() -> Dict[str, Any]:
    info = machine()
    info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or 0)
    return info


def pubmed_estimate(per_core: float, two_worker: Optional[float], per_abstract: float, cores: int) -> Dict[str, Any]:
    mentions = PUBMED_ABSTRACTS * per_abstract
    est: Dict[str, Any] = {
        "abstracts": PUBMED_ABSTRACTS,
        "mentions_per_abstract": round(per_abstract, 2),
        "mentions": round(mentions),
        "core_hours": round(mentions / per_core / 3600, 1),
        f"machine_hours_{cores}_cores_linear": round(mentions / (per_core * cores) / 3600, 1),
    }
    if two_worker:
        est["machine_hours_2_workers_measured"] = round(mentions / two_worker / 3600, 1)
    return est


def markdown(result: Dict[str, Any], command: str) -> str:
    m = result["machine"]
    rows = "\n".join(
        f"| {name} | {r['mentions']} | {r['seconds']:.1f} | {r['mentions_per_s']:.1f} | {r.get('startup_s', 0):.1f} |"
        for name, r in result["engines"].items()
    )
    p = result.get("pubmed")
    lines = [
        DOC_BEGIN,
        "## Scale-out: `nlp.pipe` processes and Ray workers (`bench/scale.py`)",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Machine: {m.get('Model name', '?')}, `nproc` = {m.get('nproc')}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', ()))}; model `{result['model']}`, {result['mentions']} mentions "
        f"(NCBI-disease test documents repeated, each copy tagged), beam {result['num_beams']}, mode {result['mode']}, "
        "one torch thread per worker.",
        "",
        "| engine | mentions | linking s | mentions/s | start-up s |",
        "|---|---|---|---|---|",
        rows,
        "",
    ]
    for key, label in (("ratio_ray_2_vs_1", "Ray 2 workers / 1 worker"), ("ratio_pipe_2_vs_1", "`nlp.pipe` n_process 2 / 1")):
        if key in result:
            lines.append(f"- {label}: **{result[key]:.2f}x**")
    agree = result.get("top1_agreement", {})
    if len(agree) > 1:
        first = next(iter(agree))
        lines.append(f"- Top-1 concept identical to {first}'s: " + ", ".join(f"{n} {v:.0%}" for n, v in agree.items() if n != first))
    if p:
        lines += [
            f"- All of PubMed (~{p['abstracts'] / 1e6:.0f}M abstracts x {p['mentions_per_abstract']} mentions per abstract, "
            f"the NCBI-disease rate; disease mentions only, a general biomedical NER finds several times more): "
            f"{p['mentions'] / 1e6:.0f}M mentions = **{p['core_hours']:,} core-hours** at the measured per-core rate"
            + (f", {p['machine_hours_2_workers_measured']:,} hours on this machine with 2 Ray workers." if "machine_hours_2_workers_measured" in p else "."),
        ]
    lines += ["", "Rates exclude loading: `nlp.pipe` is timed after a warm-up; Ray by its slowest actor's busy time "
              "(start-up of Ray and the actors is the separate column). Untrained models decode names of "
              "random length; a trained model's rate differs.", DOC_END, ""]
    return "\n".join(lines)


def update_doc(path: Path, section: str) -> None:
    """Replace the Scale-out section between its markers (or append it)."""
    from spacy_angel.fileio import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(DOC_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        print(f"error: unknown engine(s) {', '.join(unknown)}: choose from {', '.join(ENGINES)}", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kb, kb_path = cached_kb(args.kb_source, args.cache_dir)
    model_dir = args.model or cached_model(kb, kb_path, args.cache_dir, size="small")
    base, read = read_documents(args.corpus)
    docs = repeat_documents(base, args.mentions)
    n_mentions = sum(len(d[2]) for d in docs)
    print(f"{len(docs)} documents, {n_mentions} mentions ({len(base)} NCBI documents, {read} mentions read)", flush=True)
    result: Dict[str, Any] = {
        "machine": machine_info(),
        "model": str(model_dir) if args.model else f"untrained init_model size=small ({Path(model_dir).name})",
        "kb": str(args.kb_source.name), "kb_names": kb.num_names, "corpus": str(args.corpus.name),
        "documents": len(docs), "mentions": n_mentions, "num_beams": args.num_beams, "batch_size": args.batch_size,
        "mode": args.mode or "default",
        "engines": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    top1: Dict[str, List[Any]] = {}
    try:
        for name in engines:
            print(f"{name} ...", flush=True)
            if name.startswith("pipe"):
                r = run_pipe(docs, model_dir, kb_path, args, n_process=int(name[-1]))
            else:
                r = run_ray(docs, model_dir, kb_path, args, workers=int(name[-1]), tmp=tmp)
            top1[name] = r.pop("_top1")
            r["mentions_per_s"] = r["mentions"] / r["seconds"]
            result["engines"][name] = r
            print(f"{name}: {r['mentions']} mentions in {r['seconds']:.1f}s = {r['mentions_per_s']:.1f} mentions/s "
                  f"(start-up {r['startup_s']:.1f}s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = next(iter(top1.values()), [])
    result["top1_agreement"] = {n: sum(a == b for a, b in zip(first, t)) / max(1, len(first)) for n, t in top1.items()}
    rates = {n: r["mentions_per_s"] for n, r in result["engines"].items()}
    if "ray1" in rates and "ray2" in rates:
        result["ratio_ray_2_vs_1"] = rates["ray2"] / rates["ray1"]
        print(f"ratio 2 workers / 1 worker (Ray): {result['ratio_ray_2_vs_1']:.2f}")
    if "pipe1" in rates and "pipe2" in rates:
        result["ratio_pipe_2_vs_1"] = rates["pipe2"] / rates["pipe1"]
        print(f"ratio n_process 2 / 1 (nlp.pipe): {result['ratio_pipe_2_vs_1']:.2f}")
    per_core = rates.get("ray1", rates.get("pipe1"))
    if per_core:
        result["pubmed"] = pubmed_estimate(per_core, rates.get("ray2"), read / max(1, len(base)), result["machine"]["nproc"])
        p = result["pubmed"]
        print(f"PubMed: {PUBMED_ABSTRACTS / 1e6:.0f}M abstracts x {p['mentions_per_abstract']} mentions/abstract "
              f"(NCBI-disease test) = {p['mentions'] / 1e6:.0f}M mentions: {p['core_hours']:,} core-hours at "
              f"{per_core:.1f} mentions/s per core")
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(args.json, result)
    update_doc(args.doc, markdown(result, command.strip()))
    print(f"results -> {args.json}, section -> {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

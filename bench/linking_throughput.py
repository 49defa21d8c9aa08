"""Linking throughput and peak memory: spacy-angel's batched linker against the upstream recipe.

Links the NCBI-disease test mentions (with context) against MEDIC on the CPU, in ONE process
and with interleaved repeats (the machine may be shared, so both sides see the same load):

* ``ours``: :meth:`AngelLinker.link` (batched constrained beam search, see docs/performance.md);
* ``baseline``: GENRE / GenBioEL style, HF ``generate(prefix_allowed_tokens_fn=...)`` over a
  dict-of-dicts trie, one mention at a time (``bench/genre_baseline.py``);
* ``rerank``: TF-IDF top-N names re-ranked by :meth:`AngelLinker.rerank` (no beam search);
* ``hybrid``: :meth:`AngelLinker.link` with ``mode="hybrid"`` (beam + TF-IDF top-N, one encoder
  pass, fused with the model's ``fusion.json`` or the default weights);
* ``ours_int8`` / ``hybrid_int8``: the same two with the model's linear layers quantised to int8
  (``dtype="int8"``); ``ours_bf16`` / ``hybrid_bf16``: the same two with the model in bfloat16
  (``dtype="bfloat16"``; fast on CPUs with native bf16 instructions, AVX512-BF16 or AMX);
* ``encoder``: the encoder passes alone (for the decoder loop's share of time and FLOPs).

A FLOP account (``bench/flops.py``) counts what each side spends per mention (encoder, decoder
layers, output projection, attention) and sets the achieved FLOP/s against the machine's
measured float32 matmul peak at the same thread count.

Same model, KB, encoder input and decoder prompt on every side; top-1 names are compared
mention by mention. Peak RSS of each side is measured in its own subprocess. Optional sweeps:
batch size (``--batch-sizes``) and KB size (``--kb-sizes``).

    .venv/bin/python bench/linking_throughput.py [--model DIR] [--limit N] [--repeats 3]

The last line of output is the summary ``beam_vs_baseline= hybrid_vs_baseline= hybrid_per_s=
int8_speedup= peak_fraction=`` (int8 in hybrid mode; peak_fraction: beam mode's decoder loop).
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flops import encoder_seconds, flops_per_mention, matmul_peak, peak_fraction  # noqa: E402
from common import (  # noqa: E402
    add_setup_arguments,
    cached_kb,
    cached_model,
    current_rss_mb,
    dir_bytes,
    machine,
    median,
    peak_rss_mb,
    run_worker,
    trie_path_for,
    write_json_atomic,
)

SCRIPT = Path(__file__).resolve()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(p, "PubTator file with the mentions to link")
    p.add_argument("--limit", type=int, default=None, help="link only the first N mentions")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (medians are reported)")
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="our batch size for the main comparison")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--rerank-candidates", type=int, default=20, help="TF-IDF names re-ranked per mention (0 = skip)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="batch-size sweep for ours ('' = skip)")
    p.add_argument("--kb-sizes", default="", help="KB-size sweep in names, e.g. 10000,1000000 ('' = skip)")
    p.add_argument("--sweep-limit", type=int, default=240, help="mentions per sweep point")
    p.add_argument("--rss", choices=["on", "off"], default="on", help="measure peak RSS per side in subprocesses")
    p.add_argument("--rss-limit", type=int, default=240, help="mentions each RSS subprocess links")
    p.add_argument("--int8", choices=["on", "off"], default="on", help="also time the int8-quantised model")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="also time the model in bfloat16 (auto: where the CPU has AVX512-BF16 or AMX; emulated it is slow)")
    p.add_argument("--flops", choices=["on", "off"], default="on", help="FLOP account and matmul peak")
    p.add_argument("--flops-limit", type=int, default=120, help="mentions the baseline's FLOPs are counted on")
    p.add_argument("--json", type=Path, default=None, help="also write all numbers to this JSON file")
    p.add_argument("--rss-worker", choices=["ours", "baseline", "rerank", "hybrid", "idle"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- set-up
def setup(args: argparse.Namespace, batch_size: Optional[int] = None):
    import torch

    from spacy_angel.linking.linker import AngelLinker

    if args.threads:
        torch.set_num_threads(args.threads)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kb, kb_path = cached_kb(args.kb_source, args.cache_dir)
    model_dir = args.model or cached_model(kb, kb_path, args.cache_dir, size="small")
    linker = AngelLinker.from_pretrained(
        model_dir,
        kb,
        trie_path=trie_path_for(model_dir, kb_path, args.cache_dir),
        device="cpu",
        num_beams=args.num_beams,
        batch_size=batch_size or args.batch_size,
    )
    return kb, kb_path, Path(model_dir), linker


def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (torch's own probes; private, so absent means no)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def read_mentions(args: argparse.Namespace, limit: Optional[int] = None):
    from training.data.corpora import read_pubtator

    mentions = list(read_pubtator(args.corpus))
    limit = limit if limit is not None else args.limit
    return mentions[:limit] if limit else mentions


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


# ----------------------------------------------------------------------------- RSS worker
def rss_worker(args: argparse.Namespace) -> Dict[str, Any]:
    """Load one side, link ``--rss-limit`` mentions, report RSS (runs in its own process)."""
    start_rss = current_rss_mb()
    out: Dict[str, Any] = {"side": args.rss_worker, "rss_python_mb": start_rss}
    mentions = read_mentions(args, args.rss_limit)
    import torch  # noqa: F401  (import cost counted in rss_after_imports)

    import spacy_angel.linking.linker  # noqa: F401

    out["rss_after_imports_mb"] = current_rss_mb()
    from common import cached_kb

    cached_kb(args.kb_source, args.cache_dir)
    out["kb_rss_mb"] = current_rss_mb() - out["rss_after_imports_mb"]  # the KB object (cached_kb reloads it below)
    kb, _, _, linker = setup(args)
    out["rss_after_load_mb"] = current_rss_mb()
    out["model_mb"] = model_bytes(linker.model) / 1e6
    out["trie_mb"] = linker.trie.nbytes / 1e6
    out["kb_names"] = kb.num_names
    side = args.rss_worker
    if side == "baseline":
        from genre_baseline import GenreBaseline, build_dict_trie

        depth = linker.max_name_length
        linker.trie = None  # the baseline keeps its own trie; drop ours before measuring
        gc.collect()
        before = current_rss_mb()
        t0 = time.perf_counter()
        trie, name_of = build_dict_trie(kb.names, linker.tokenizer)
        out["dict_trie_build_s"] = time.perf_counter() - t0
        out["dict_trie_rss_mb"] = current_rss_mb() - before
        runner = GenreBaseline(linker, trie, name_of, max_new_tokens=depth)
        out["rss_after_load_mb"] = current_rss_mb()
        runner.link(mentions, top_k=args.top_k)
    elif side == "ours":
        linker.link(mentions, top_k=args.top_k)
    elif side == "hybrid":
        import scipy.sparse  # noqa: F401  (imports are not the index: counted apart)
        import sklearn.feature_extraction.text  # noqa: F401

        from spacy_angel.retrieval.tfidf import NameIndex

        out["index_imports_rss_mb"] = current_rss_mb() - out["rss_after_load_mb"]
        before = current_rss_mb()
        linker.name_index = NameIndex(kb).fit()
        m = linker.name_index.matrix
        out["index_rss_mb"] = current_rss_mb() - before
        out["index_matrix_mb"] = (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 1e6
        out["index_projected_6m_names_mb"] = out["index_matrix_mb"] / kb.num_names * 6e6
        out["index_features"] = int(m.shape[1])
        out["rss_after_load_mb"] = current_rss_mb()
        linker.link(mentions, top_k=args.top_k, mode="hybrid")
    elif side == "rerank":
        from spacy_angel.retrieval.tfidf import NameIndex

        index = NameIndex(kb).fit()
        out["rss_after_load_mb"] = current_rss_mb()
        linker.rerank(mentions, "tfidf", top_k=args.top_k, num_candidates=args.rerank_candidates, index=index)
    out["rss_end_mb"] = current_rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    out["mentions"] = len(mentions)
    return out


# ----------------------------------------------------------------------------- helpers
def top1(cands) -> Optional[str]:
    return cands[0].name if cands else None


def explain_differences(linker, mentions, ours, base) -> List[Dict[str, Any]]:
    """For every mention whose top-1 differs: both names' teacher-forced scores, and why."""
    diffs = []
    for i, (m, a, b) in enumerate(zip(mentions, ours, base)):
        na, nb = top1(a), top1(b)
        if na == nb:
            continue
        names = [n for n in (na, nb) if n is not None]
        scored = {c.name: c.score for c in linker.rerank([m], [names], top_k=len(names))[0]} if names else {}
        sa, sb = scored.get(na), scored.get(nb)
        if sa is not None and sb is not None and abs(sa - sb) < 1e-4:
            why = "tie (scores equal within 1e-4): either order is correct"
        elif sa is not None and sb is not None and sb > sa:
            why = "baseline's name scores higher: our beam search missed it"
        elif sa is not None and sb is not None:
            why = "our name scores higher: the baseline's beam search missed it"
        else:
            why = "one side returned no candidate"
        # A name that is a synonym of the same concept is not a linking difference.
        same_concept = bool(a and b and set(a[0].kb_ids) & set(b[0].kb_ids))
        diffs.append(
            {"mention": i, "surface": m.surface, "ours": na, "baseline": nb, "ours_score": sa, "baseline_score": sb,
             "same_concept": same_concept, "why": why}
        )
    return diffs


def accuracy(predictions, mentions, kb) -> Dict[str, float]:
    from training.evaluation.metrics import accuracy_at_k

    return accuracy_at_k(predictions, [m.gold_ids for m in mentions], ks=(1, 5), kb=kb)


def sub_kb(kb, size: int, seed: int = 0):
    """A KB with about ``size`` names: whole MEDIC concepts if smaller, else MEDIC + synthetic names.

    Synthetic names are 1-6 words drawn from MEDIC's own word list (so they tokenize like
    real names) and attached to synthetic concept ids.
    """
    from spacy_angel.kb.store import KnowledgeBase

    out = KnowledgeBase(lowercase=kb.lowercase)
    if size <= kb.num_names:
        for cid in kb.concept_ids:
            for name in kb.names_for(cid):
                out.add(cid, name)
            if out.num_names >= size:
                break
        return out
    for cid in kb.concept_ids:
        for name in kb.names_for(cid):
            out.add(cid, name)
    rng = random.Random(seed)
    words = sorted({w for n in kb.names for w in n.split()})
    lengths = [len(n.split()) for n in kb.names]
    i = 0
    while out.num_names < size:
        name = " ".join(rng.choice(words) for _ in range(rng.choice(lengths)))
        out.add(f"SYN{i // 5:07d}", name)
        i += 1
    return out


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.rss_worker:
        print(json.dumps(rss_worker(args)))
        return 0
    import torch

    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.trie.kb_trie import build_trie

    report: Dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    kb, kb_path, model_dir, linker = setup(args)
    mentions = read_mentions(args)
    n = len(mentions)
    unique_inputs = len({linker.encode(m) for m in mentions})
    report["setup"] = {
        "kb_source": str(args.kb_source), "kb_names": kb.num_names, "kb_concepts": len(kb), "model": str(model_dir),
        "model_mb": model_bytes(linker.model) / 1e6, "model_dir_mb": dir_bytes(model_dir) / 1e6,
        "trie_nodes": linker.trie.num_nodes, "trie_mb": linker.trie.nbytes / 1e6, "mentions": n,
        "unique_inputs": unique_inputs, "num_beams": args.num_beams, "top_k": args.top_k,
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
    }
    print(f"# {n} mentions ({unique_inputs} distinct inputs), KB {kb.num_names} names / {len(kb)} concepts, "
          f"model {model_dir} ({report['setup']['model_mb']:.0f} MB), trie {linker.trie.nbytes / 1e6:.1f} MB", flush=True)

    baseline = None
    if not args.skip_baseline:
        from genre_baseline import GenreBaseline, build_dict_trie

        t0 = time.perf_counter()
        dict_trie, name_of = build_dict_trie(kb.names, linker.tokenizer)
        report["setup"]["dict_trie_build_s"] = time.perf_counter() - t0
        baseline = GenreBaseline(linker, dict_trie, name_of)
    index = None
    if args.rerank_candidates > 0:
        from spacy_angel.retrieval.tfidf import NameIndex

        index = NameIndex(kb).fit()
        from spacy_angel.linking.fusion import FusionWeights

        linker.name_index = index  # the hybrid side retrieves from the same index
        linker.fusion = FusionWeights.for_model(model_dir)
        linker.num_candidates = args.rerank_candidates
    reduced: Dict[str, AngelLinker] = {}  # side suffix -> the same linker with the model in another dtype
    bf16 = args.bf16 if args.bf16 != "auto" else ("on" if native_bf16() else "off")
    for suffix, dtype, wanted in (("int8", "int8", args.int8), ("bf16", "bfloat16", bf16)):
        if wanted == "on":
            from spacy_angel.seq2seq.loading import load_model_and_tokenizer

            other = AngelLinker(load_model_and_tokenizer(model_dir, device="cpu", dtype=dtype)[0], linker.tokenizer, kb,
                                linker.trie, num_beams=args.num_beams, batch_size=args.batch_size)
            other.name_index, other.fusion = linker.name_index, linker.fusion
            other.num_candidates = linker.num_candidates
            other.link(mentions[:4], top_k=args.top_k)
            reduced[suffix] = other

    # Warm-up (first-call allocations, lazy imports), then interleaved timed repeats.
    linker.link(mentions[:4], top_k=args.top_k)
    if baseline:
        baseline.link(mentions[:2], top_k=args.top_k)
    if index is not None:
        linker.rerank(mentions[:4], "tfidf", top_k=args.top_k, num_candidates=args.rerank_candidates, index=index)
    times: Dict[str, List[float]] = {"ours": [], "baseline": [], "rerank": [], "hybrid": [], "ours_int8": [],
                                     "hybrid_int8": [], "ours_bf16": [], "hybrid_bf16": [], "encoder": []}
    results: Dict[str, Any] = {}
    for rep in range(args.repeats):
        linker.clear_cache()
        t0 = time.perf_counter()
        results["ours"] = linker.link(mentions, top_k=args.top_k)
        times["ours"].append(time.perf_counter() - t0)
        if baseline:
            t0 = time.perf_counter()
            results["baseline"] = baseline.link(mentions, top_k=args.top_k)
            times["baseline"].append(time.perf_counter() - t0)
        if index is not None:
            linker.clear_cache()
            t0 = time.perf_counter()
            results["rerank"] = linker.rerank(
                mentions, "tfidf", top_k=args.top_k, num_candidates=args.rerank_candidates, index=index
            )
            times["rerank"].append(time.perf_counter() - t0)
            linker.clear_cache()
            t0 = time.perf_counter()
            results["hybrid"] = linker.link(mentions, top_k=args.top_k, mode="hybrid")
            times["hybrid"].append(time.perf_counter() - t0)
        for suffix, other in reduced.items():
            for mode, side in (("beam", f"ours_{suffix}"), ("hybrid", f"hybrid_{suffix}")):
                if mode == "beam" or index is not None:
                    other.clear_cache()
                    t0 = time.perf_counter()
                    results[side] = other.link(mentions, top_k=args.top_k, mode=mode)
                    times[side].append(time.perf_counter() - t0)
        times["encoder"].append(encoder_seconds(linker, mentions))
        print(f"# repeat {rep + 1}: " + ", ".join(f"{k} {n / v[-1]:.2f}/s" for k, v in times.items() if v), flush=True)
    linker.clear_cache()

    throughput = {k: {"seconds": v, "median_s": median(v), "mentions_per_s": n / median(v)} for k, v in times.items() if v}
    report["throughput"] = throughput
    if args.flops == "on":
        report["flops"] = flop_account(linker, baseline, mentions, args, throughput)
    report["accuracy"] = {k: accuracy(v, mentions, kb) for k, v in results.items()}
    if index is not None:
        report["accuracy"]["tfidf_only"] = accuracy(index.link([linker._pieces(m)[1] for m in mentions], args.top_k), mentions, kb)
    if baseline:
        diffs = explain_differences(linker, mentions, results["ours"], results["baseline"])
        report["top1_agreement"] = {"same": n - len(diffs), "total": n, "differences": diffs}
        report["speedup_vs_baseline"] = throughput["ours"]["mentions_per_s"] / throughput["baseline"]["mentions_per_s"]
    if index is not None and "ours" in results:
        report["rerank_top1_same_as_ours"] = sum(top1(a) == top1(b) for a, b in zip(results["ours"], results["rerank"]))
    for suffix in reduced:
        for fp32 in ("ours", "hybrid"):
            if f"{fp32}_{suffix}" in results:  # same name at rank 1 (ties aside: another dtype is another model)
                same = sum(top1(a) == top1(b) for a, b in zip(results[fp32], results[f"{fp32}_{suffix}"]))
                report.setdefault(f"{suffix}_top1_same", {})[fp32] = {"same": same, "total": n}

    # Batch-size sweep (ours only), interleaved across sizes.
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if sizes:
        sweep_mentions = mentions[: args.sweep_limit]
        sweep: Dict[int, List[float]] = {s: [] for s in sizes}
        for _ in range(args.repeats):
            for s in sizes:
                linker.batch_size = s
                linker.clear_cache()
                t0 = time.perf_counter()
                linker.link(sweep_mentions, top_k=args.top_k)
                sweep[s].append(time.perf_counter() - t0)
        linker.batch_size = args.batch_size
        linker.clear_cache()
        report["batch_sweep"] = {
            str(s): {"mentions": len(sweep_mentions), "median_s": median(v), "mentions_per_s": len(sweep_mentions) / median(v)}
            for s, v in sweep.items()
        }

    # KB-size sweep (ours only): the model is the same, only the KB and its trie change.
    kb_sizes = [int(s) for s in args.kb_sizes.split(",") if s.strip()]
    if kb_sizes:
        sweep_mentions = mentions[: args.sweep_limit]
        report["kb_sweep"] = {}
        for size in kb_sizes:
            other = kb if size == kb.num_names else sub_kb(kb, size)
            t0 = time.perf_counter()
            trie = build_trie(other, linker.tokenizer)
            build_s = time.perf_counter() - t0
            other_linker = AngelLinker(linker.model, linker.tokenizer, other, trie, num_beams=args.num_beams,
                                       batch_size=args.batch_size)
            other_linker.link(sweep_mentions[:4], top_k=args.top_k)
            other_linker.clear_cache()
            runs = []
            for _ in range(args.repeats):
                other_linker.clear_cache()
                t0 = time.perf_counter()
                other_linker.link(sweep_mentions, top_k=args.top_k)
                runs.append(time.perf_counter() - t0)
            report["kb_sweep"][str(other.num_names)] = {
                "trie_build_s": build_s, "trie_mb": trie.nbytes / 1e6, "trie_nodes": trie.num_nodes,
                "mentions": len(sweep_mentions), "median_s": median(runs), "mentions_per_s": len(sweep_mentions) / median(runs),
            }
            del other_linker, trie, other
            gc.collect()

    # Peak RSS, one fresh process per side.
    if args.rss == "on":
        passthrough = ["--corpus", str(args.corpus), "--kb-source", str(args.kb_source), "--cache-dir", str(args.cache_dir),
                       "--num-beams", str(args.num_beams), "--top-k", str(args.top_k), "--batch-size", str(args.batch_size),
                       "--rss-limit", str(args.rss_limit), "--rerank-candidates", str(max(1, args.rerank_candidates))]
        if args.model:
            passthrough += ["--model", str(args.model)]
        if args.threads:
            passthrough += ["--threads", str(args.threads)]
        sides = ["ours"] + ([] if args.skip_baseline else ["baseline"]) + (["rerank", "hybrid"] if args.rerank_candidates > 0 else [])
        report["rss"] = {side: run_worker(SCRIPT, passthrough + ["--rss-worker", side]) for side in sides}

    import os

    report["machine"]["loadavg_at_end"] = os.getloadavg()
    print_report(report)
    if args.json:
        write_json_atomic(args.json, report)
    print(summary_line(report))
    return 0


def summary_line(report: Dict[str, Any]) -> str:
    """``beam_vs_baseline= hybrid_vs_baseline= hybrid_per_s= int8_speedup= peak_fraction=`` (nan if not run)."""
    rate = {side: t["mentions_per_s"] for side, t in report["throughput"].items()}
    nan = float("nan")

    def ratio(a: str, b: str) -> float:
        return rate[a] / rate[b] if a in rate and b in rate else nan

    loop = report.get("flops", {}).get("decoder_loop", {}).get("ours", {}).get("peak_fraction", nan)
    return (f"beam_vs_baseline={ratio('ours', 'baseline'):.2f} hybrid_vs_baseline={ratio('hybrid', 'baseline'):.2f} "
            f"hybrid_per_s={rate.get('hybrid', nan):.2f} int8_speedup={ratio('hybrid_int8', 'hybrid'):.2f} "
            f"peak_fraction={loop:.3f}")


def flop_account(linker, baseline, mentions, args, throughput) -> Dict[str, Any]:
    """MFLOPs per mention per side, achieved GFLOP/s and fraction of the measured matmul peak.

    ``decoder_loop``: everything after the encoder (beam steps, scoring), FLOPs and seconds net
    of the encoder side's. Counting runs are separate from the timed ones (hooks cost time).
    """
    account: Dict[str, Any] = {"matmul_gflops": matmul_peak()}
    peak = account["matmul_gflops"]["peak"]
    n = len(mentions)
    runs = {"ours": lambda: linker.link(mentions, top_k=args.top_k, mode="beam"),
            "encoder": lambda: encoder_seconds(linker, mentions)}
    if args.rerank_candidates > 0:
        runs["hybrid"] = lambda: linker.link(mentions, top_k=args.top_k, mode="hybrid")
    sides: Dict[str, Dict[str, float]] = {}
    for side, run in runs.items():
        linker.clear_cache()
        sides[side] = flops_per_mention(linker.model, run, n)
    if baseline is not None:
        few = mentions[: args.flops_limit]
        sides["baseline"] = flops_per_mention(linker.model, lambda: baseline.link(few, top_k=args.top_k), len(few))
    linker.clear_cache()
    for side, f in sides.items():
        rate = throughput.get(side, {}).get("mentions_per_s")
        if rate:
            f["gflops_per_s"] = f["total"] * rate / 1e3
            f["peak_fraction"] = peak_fraction(f["total"], rate, peak)
    account["per_mention_mflops"] = sides
    loops: Dict[str, Dict[str, float]] = {}
    enc_s = throughput.get("encoder", {}).get("median_s")
    for side in ("ours", "hybrid"):
        if side in sides and side in throughput and enc_s:
            mflops = sides[side]["total"] - sides["encoder"]["total"]
            seconds = throughput[side]["median_s"] - enc_s
            loops[side] = {"mflops_per_mention": mflops, "seconds": seconds,
                           "peak_fraction": peak_fraction(mflops, n / seconds, peak)}
    account["decoder_loop"] = loops
    return account


def print_report(report: Dict[str, Any]) -> None:
    m = report["machine"]
    s = report["setup"]
    print(f"\nmachine: {m.get('Model name', '?')}, {m.get('cpus')} CPUs, torch {m['torch']} ({s['torch_threads']} threads), "
          f"transformers {m['transformers']}, load average at start {m.get('loadavg_at_start')}, at end {m.get('loadavg_at_end')}")
    print(f"setup: {s['mentions']} mentions ({s['unique_inputs']} distinct inputs), KB {s['kb_names']} names, "
          f"beams {s['num_beams']}, top-k {s['top_k']}, our batch size {s['batch_size']}")
    print("\nside        median s   mentions/s   acc@1   acc@5")
    for side, t in report["throughput"].items():
        acc = report["accuracy"].get(side, {})
        print(f"{side:<10} {t['median_s']:>9.2f} {t['mentions_per_s']:>12.2f}   {acc.get('acc@1', float('nan')):.3f}   {acc.get('acc@5', float('nan')):.3f}")
    if "tfidf_only" in report["accuracy"]:
        acc = report["accuracy"]["tfidf_only"]
        print(f"{'tfidf only':<10} {'':>9} {'':>12}   {acc['acc@1']:.3f}   {acc['acc@5']:.3f}")
    if "flops" in report:
        f = report["flops"]
        print(f"\nmatmul peak (float32 torch.mm, same threads): {f['matmul_gflops']['peak']:.1f} GFLOP/s")
        print("side        MFLOP/mention (enc / dec layers / out proj / attn)   GFLOP/s   of peak")
        for side, r in f["per_mention_mflops"].items():
            parts = " / ".join(f"{r[c]:.0f}" for c in ("encoder", "decoder_layers", "output_projection", "attention"))
            print(f"{side:<10} {r['total']:>8.0f} ({parts})   {r.get('gflops_per_s', float('nan')):>8.1f}   "
                  f"{100 * r.get('peak_fraction', float('nan')):5.1f}%")
        for side, r in f["decoder_loop"].items():
            print(f"decoder loop ({side}): {r['mflops_per_mention']:.0f} MFLOP/mention, {100 * r['peak_fraction']:.1f}% of peak")
    if "top1_agreement" in report:
        agree = report["top1_agreement"]
        print(f"\ntop-1 identical to the baseline: {agree['same']}/{agree['total']}")
        for d in agree["differences"][:20]:
            print(f"  mention {d['mention']} {d['surface']!r}: ours {d['ours']!r} ({d['ours_score']}), "
                  f"baseline {d['baseline']!r} ({d['baseline_score']}): {d['why']}")
        print(f"speedup (ours / baseline mentions per s, medians): {report['speedup_vs_baseline']:.2f}x")
    if "rerank_top1_same_as_ours" in report:
        print(f"rerank top-1 equal to beam-search top-1: {report['rerank_top1_same_as_ours']}/{s['mentions']}")
    if "batch_sweep" in report:
        print("\nbatch size   mentions/s")
        for size, r in report["batch_sweep"].items():
            print(f"{size:>10} {r['mentions_per_s']:>12.2f}")
    if "kb_sweep" in report:
        print("\nKB names    trie MB   trie build s   mentions/s")
        for size, r in report["kb_sweep"].items():
            print(f"{size:>8} {r['trie_mb']:>9.1f} {r['trie_build_s']:>14.1f} {r['mentions_per_s']:>12.2f}")
    if "rss" in report:
        print("\nside        RSS after load MB   peak RSS MB   model MB   trie MB")
        for side, r in report["rss"].items():
            extra = f"   dict trie {r['dict_trie_rss_mb']:.0f} MB" if "dict_trie_rss_mb" in r else ""
            print(f"{side:<10} {r['rss_after_load_mb']:>18.0f} {r['peak_rss_mb']:>13.0f} {r['model_mb']:>10.0f} {r['trie_mb']:>9.1f}{extra}")
        for side in ("ours", "hybrid"):
            r = report["rss"].get(side)
            if r:
                parts = r["model_mb"] + r["trie_mb"] + r["kb_rss_mb"] + r.get("index_rss_mb", 0.0)
                net = r["peak_rss_mb"] - r["rss_after_imports_mb"] - r.get("index_imports_rss_mb", 0.0)
                print(f"{side}: peak net of imports {net:.0f} MB vs model + KB + trie + index + 100 MB = {parts + 100:.0f} MB"
                      + (f" (index: {r['index_matrix_mb']:.0f} MB matrix, {r['index_features']} 3-gram features; 6M names: "
                         f"{r['index_projected_6m_names_mb']:.0f} MB)" if "index_matrix_mb" in r else ""))


if __name__ == "__main__":
    sys.exit(main())

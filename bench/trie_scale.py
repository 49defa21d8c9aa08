"""Build time and memory of the token trie at UMLS-like scale, against a dict-of-dicts trie.

Synthetic KBs of 100k, 1M and 6M names are generated directly as token-id sequences (no
strings are tokenized: tokenizing 6M names would dominate the run and is not what is
measured). Name lengths follow MEDIC's names: by default ``ceil(characters / 3.5)`` tokens,
a stand-in for a general-domain 50k BPE (BART's) on biomedical names, which splits far more
than the small tokenizer fitted on MEDIC (``--lengths medic`` uses that one's lengths).
Tokens are drawn from a 50k vocabulary with Zipf-distributed frequencies, so frequent
tokens share prefixes as real names do; the run reports nodes per token next to MEDIC's.

Each size runs in its own subprocess. Memory is the process's resident set: after the input
arrays exist, the peak is reset (``/proc/self/clear_refs``), so ``build_peak`` is what the
build itself needs on top of its input, and ``retained`` is what the finished trie holds.
The dict-of-dicts trie (GENRE / GenBioEL) is built where it fits (100k, 1M by default) and
extrapolated to 6M by its bytes per node (say so in reports).

    .venv/bin/python bench/trie_scale.py [--sizes 100000,1000000,6000000] [--dict-sizes 100000,1000000]

Last line: ``trie_6m_rss_mb=<retained MB of the largest size> dict_ratio=<dict MB / ours>``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CACHE, DEFAULT_KB_SOURCE, cached_kb, cached_model, current_rss_mb, machine, peak_rss_mb, run_worker, write_json_atomic  # noqa: E402

from spacy_angel.memory import release_free_heap  # noqa: E402

SCRIPT = Path(__file__).resolve()
EOS = 2


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000,6000000", help="numbers of names")
    p.add_argument("--dict-sizes", default="100000,1000000", help="sizes at which the dict-of-dicts trie is built")
    p.add_argument("--vocab", type=int, default=50_000)
    p.add_argument("--zipf", type=float, default=1.0, help="exponent of the token frequency distribution")
    p.add_argument("--lengths", choices=["chars", "medic"], default="chars", help="name length model (see above)")
    p.add_argument("--kb-source", type=Path, default=DEFAULT_KB_SOURCE)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", choices=["ours", "dict", "load"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- synthetic names
def length_distribution(args: argparse.Namespace) -> np.ndarray:
    """Token lengths of the MEDIC names (cached as .npy), per the ``--lengths`` model."""
    path = args.cache_dir / f"medic-lengths-{args.lengths}.npy"
    if path.exists():
        return np.load(path)
    kb, kb_path = cached_kb(args.kb_source, args.cache_dir)
    if args.lengths == "chars":
        lengths = np.array([max(1, math.ceil(len(n) / 3.5)) for n in kb.names], dtype=np.int32)
    else:
        from spacy_angel.seq2seq.loading import load_model_and_tokenizer

        _, tok = load_model_and_tokenizer(cached_model(kb, kb_path, args.cache_dir), device="cpu")
        lengths = np.array([len(x) for x in tok([" " + n for n in kb.names], add_special_tokens=False)["input_ids"]], dtype=np.int32)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, lengths)
    return lengths


def synthetic_names(size: int, lengths_pool: np.ndarray, vocab: int, zipf: float, seed: int):
    """(flat int32 tokens, int64 lengths) for ``size`` names, generated in chunks."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab - 4, dtype=np.float64)
    probs = ranks ** -zipf
    cdf = np.cumsum(probs / probs.sum())
    perm = rng.permutation(np.arange(5, vocab, dtype=np.int32))  # ids 0..4 are special tokens
    lengths = rng.choice(lengths_pool, size=size).astype(np.int64)
    flat = np.empty(int(lengths.sum()), dtype=np.int32)
    chunk = 5_000_000
    for lo in range(0, flat.size, chunk):
        u = rng.random(min(chunk, flat.size - lo))
        flat[lo : lo + u.size] = perm[np.minimum(np.searchsorted(cdf, u), perm.size - 1)]
    return flat, lengths


# ----------------------------------------------------------------------------- workers
def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) for this process."""
    with open("/proc/self/clear_refs", "w", encoding="utf8") as fh:
        fh.write("5")


def trie_dir(args: argparse.Namespace) -> Path:
    return args.cache_dir / f"trie-scale-{args.size}"


def load_worker(args: argparse.Namespace) -> Dict[str, Any]:
    """RSS of a trie loaded from disk into a fresh process (what a linker process holds)."""
    import shutil

    from spacy_angel.trie.token_trie import TokenTrie

    before = current_rss_mb()
    t0 = time.perf_counter()
    trie = TokenTrie.from_disk(trie_dir(args))
    out = {"load_s": time.perf_counter() - t0, "loaded_rss_mb": current_rss_mb() - before, "nodes": trie.num_nodes}
    del trie
    shutil.rmtree(trie_dir(args), ignore_errors=True)
    return out


def worker(args: argparse.Namespace) -> Dict[str, Any]:
    if args.worker == "load":
        return load_worker(args)
    # Import first: module memory must not count as trie memory.
    from genre_baseline import DictTrie
    from spacy_angel.trie.token_trie import TokenTrie

    flat, lengths = synthetic_names(args.size, length_distribution(args), args.vocab, args.zipf, args.seed)
    out: Dict[str, Any] = {"names": args.size, "tokens": int(flat.size), "input_mb": (flat.nbytes + lengths.nbytes) / 1e6}
    gc.collect()
    before = current_rss_mb()
    reset_peak()
    if args.worker == "ours":
        t0 = time.perf_counter()
        trie = TokenTrie.build_flat(flat, lengths, eos_token_id=EOS, vocab_size=args.vocab)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_mb"] = peak_rss_mb() - before
        gc.collect()
        out["retained_mb"] = current_rss_mb() - before  # the input is still alive: not counted
        release_free_heap()
        out["retained_trimmed_mb"] = current_rss_mb() - before
        out["array_mb"] = trie.nbytes / 1e6
        out["nodes"] = trie.num_nodes
        out["distinct_names"] = trie.num_names
        out.update(query_speed(trie, args.seed))
        t0 = time.perf_counter()
        trie.to_disk(trie_dir(args))
        out["save_s"] = time.perf_counter() - t0
        out["disk_mb"] = sum(f.stat().st_size for f in trie_dir(args).iterdir()) / 1e6
    else:
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        t0 = time.perf_counter()
        trie = DictTrie()
        for s, n in zip(starts.tolist(), lengths.tolist()):
            trie.add(flat[s : s + n].tolist() + [EOS])
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_mb"] = peak_rss_mb() - before
        gc.collect()
        out["retained_mb"] = current_rss_mb() - before
        release_free_heap()
        out["retained_trimmed_mb"] = current_rss_mb() - before
        out["nodes"] = count_nodes(trie.root)
    return out


def count_nodes(root: dict) -> int:
    count, stack = 1, [root]
    while stack:
        node = stack.pop()
        count += len(node)
        stack.extend(node.values())
    return count


def query_speed(trie, seed: int) -> Dict[str, float]:
    """Microseconds per allowed-token lookup for a decoding step of 160 beams (32 inputs x 5 beams)."""
    rng = np.random.default_rng(seed)
    nodes = rng.integers(0, trie.num_nodes, size=160)
    t0 = time.perf_counter()
    reps = 200
    for _ in range(reps):
        trie.allowed_pairs(nodes)
    step_us = (time.perf_counter() - t0) / reps * 1e6
    root = np.zeros(160, dtype=np.int64)
    t0 = time.perf_counter()
    for _ in range(20):
        rows, _ = trie.allowed_pairs(root)
    root_us = (time.perf_counter() - t0) / 20 * 1e6
    out = {"step_160_beams_us": step_us, "root_step_160_beams_us": root_us, "root_fanout": int(rows.size // 160)}
    out.update(root_mask_ms(trie))
    return out


def root_mask_ms(trie, vocab: int = 50_000, reps: int = 10) -> Dict[str, float]:
    """Milliseconds of the whole trie-mask step at the root for 160 beams: (row, token) pairs vs
    the cached dense mask (``spacy_angel.decoding.trie_constraint.DENSE_FANOUT``), same masked scores."""
    import torch

    import spacy_angel.decoding.trie_constraint as tc

    scores = torch.randn(160, max(vocab, int(trie.edge_token.max()) + 1))
    at_root = torch.zeros((160, 0), dtype=torch.long)
    out: Dict[str, float] = {}
    results = {}
    default = tc.DENSE_FANOUT
    for name, threshold in (("pairs", 1 << 62), ("dense", default)):
        tc.DENSE_FANOUT = threshold
        try:
            constraint = tc.TrieConstraint(trie, prompt_length=0)
            results[name] = constraint(at_root, scores)  # first call builds the dense mask (cached)
            t0 = time.perf_counter()
            for _ in range(reps):
                tc.TrieConstraint(trie, prompt_length=0)(at_root, scores)
            out[f"root_mask_{name}_ms"] = (time.perf_counter() - t0) / reps * 1e3
        finally:
            tc.DENSE_FANOUT = default
    assert torch.equal(results["pairs"], results["dense"]), "dense and pair masks differ"
    return out


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    dict_sizes = [int(s) for s in args.dict_sizes.split(",") if s.strip()]
    common_args = ["--vocab", str(args.vocab), "--zipf", str(args.zipf), "--lengths", args.lengths,
                   "--kb-source", str(args.kb_source), "--cache-dir", str(args.cache_dir), "--seed", str(args.seed)]
    pool = length_distribution(args)
    report: Dict[str, Any] = {
        "machine": machine(),
        "lengths": {"model": args.lengths, "mean": float(pool.mean()), "median": float(np.median(pool)), "max": int(pool.max())},
        "vocab": args.vocab, "zipf": args.zipf, "ours": {}, "dict": {},
    }
    print(f"# names: {args.lengths} lengths (mean {pool.mean():.2f} tokens), vocabulary {args.vocab}, Zipf {args.zipf}", flush=True)
    for size in sizes:
        r = run_worker(SCRIPT, common_args + ["--worker", "ours", "--size", str(size)])
        r.update(run_worker(SCRIPT, common_args + ["--worker", "load", "--size", str(size)]))
        report["ours"][str(size)] = r
        print(f"# ours {size}: {r['build_s']:.1f} s, retained {r['retained_mb']:.0f} MB, peak {r['build_peak_mb']:.0f} MB", flush=True)
    for size in dict_sizes:
        r = run_worker(SCRIPT, common_args + ["--worker", "dict", "--size", str(size)])
        report["dict"][str(size)] = r
        print(f"# dict {size}: {r['build_s']:.1f} s, retained {r['retained_mb']:.0f} MB", flush=True)

    # Extrapolate the dict trie by bytes per node (measured at the largest dict size).
    largest_dict = max(dict_sizes) if dict_sizes else None
    if largest_dict:
        per_node = report["dict"][str(largest_dict)]["retained_mb"] / report["dict"][str(largest_dict)]["nodes"]
        per_node_s = report["dict"][str(largest_dict)]["build_s"] / report["dict"][str(largest_dict)]["nodes"]
        for size in sizes:
            if str(size) not in report["dict"]:
                nodes = report["ours"][str(size)]["nodes"]
                report["dict"][str(size)] = {"names": size, "nodes": nodes, "retained_mb": per_node * nodes,
                                             "retained_trimmed_mb": per_node * nodes,
                                             "build_s": per_node_s * nodes, "extrapolated": True}

    print("\n names      tokens      nodes  nodes/token  build s  peak MB  retained MB (trimmed)  arrays MB  loaded MB  step us | dict MB  dict s  dict/ours")
    for size in sizes:
        o, d = report["ours"][str(size)], report["dict"].get(str(size), {})
        ratio = d.get("retained_mb", float("nan")) / max(o["retained_mb"], o["loaded_rss_mb"])
        tag = "*" if d.get("extrapolated") else " "
        print(f"{size:>6} {o['tokens']:>11} {o['nodes']:>10} {o['nodes'] / (o['tokens'] + size):>12.2f} {o['build_s']:>8.1f} "
              f"{o['build_peak_mb']:>8.0f} {o['retained_mb']:>12.0f} ({o['retained_trimmed_mb']:>6.0f}) {o['array_mb']:>10.0f} {o['loaded_rss_mb']:>10.0f} "
              f"{o['step_160_beams_us']:>8.0f} | {d.get('retained_mb', float('nan')):>7.0f}{tag} {d.get('build_s', float('nan')):>6.0f} {ratio:>10.1f}")
    print("(* extrapolated from the largest measured dict trie by bytes per node)")
    for size in sizes:
        o = report["ours"][str(size)]
        print(f"root mask step, 160 beams, {size} names (fan-out {o['root_fanout']}): (row, token) pairs "
              f"{o['root_mask_pairs_ms']:.1f} ms, dense {o['root_mask_dense_ms']:.1f} ms")
    if args.json:
        write_json_atomic(args.json, report)
    big = str(max(sizes))
    # The trie's resident memory: built in this process (build slack included) or loaded, whichever is larger.
    ours_mb = max(report["ours"][big]["retained_mb"], report["ours"][big]["loaded_rss_mb"])
    dict_mb = report["dict"].get(big, {}).get("retained_mb", float("nan"))
    print(f"trie_6m_rss_mb={ours_mb:.0f} dict_ratio={dict_mb / ours_mb:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

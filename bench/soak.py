"""Soak: link many mentions through ``nlp.pipe(n_process=2)`` and ``link --engine ray`` (2 workers) and watch
the workers' memory; the output must equal one process's.

NCBI-disease test documents (MEDIC KB) repeated to ``--mentions`` mentions, each copy tagged so no input
repeats (``bench/scale.py``'s ``repeat_documents``). A sampler thread reads every worker process's RSS each
``--every`` seconds (``nlp.pipe``'s children; Ray's ``ray::`` worker processes). Growth = a worker's last RSS
over its RSS after warm-up (the engine's own start-up time plus a tenth of its linking time), and over the
second half of the run, in percent; the figures reported are the largest over the workers. The linker
keeps up to 100,000 results per cache (``AngelLinker(cache_size=...)``): while a worker has seen fewer
distinct inputs than that, its RSS grows by design, so a run long enough to fill the caches shows
whether anything else grows (the second-half figure). Linking uses an untrained ``init-model --size tiny``
by default: the soak is about memory and equality, and a tiny model gets through 100k mentions in minutes.

    .venv/bin/python bench/soak.py [--mentions 100000] [--json docs/results/soak.json]

Writes the JSON; the "Soak" section of docs/reliability.md is generated from it by tests/test_bad_inputs.py
(``python tests/test_bad_inputs.py --markdown > docs/reliability.md``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, add_setup_arguments, cached_kb, cached_model, machine, write_json_atomic  # noqa: E402
from scale import read_documents, repeat_documents, run_pipe, run_ray  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(p, "PubTator documents to link (repeated)")
    p.add_argument("--mentions", type=int, default=100_000)
    p.add_argument("--size", default="tiny", help="init-model size when --model is not given")
    p.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "soak.json")
    args = p.parse_args(argv)
    args.num_beams, args.top_k, args.batch_size, args.mode = 5, 5, 32, None
    return args


class Sampler(threading.Thread):
    """RSS (MB) over time of this process's children, or of Ray's worker processes."""

    def __init__(self, every: float, ray: bool) -> None:
        super().__init__(daemon=True)
        self.every, self.ray, self.samples = every, ray, {}  # pid -> [(t, rss_mb)]
        self.stop = threading.Event()
        self.start_time = time.perf_counter()

    def workers(self) -> List[Any]:
        import psutil

        if not self.ray:
            return psutil.Process().children(recursive=False)
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if cmd.startswith("ray::") and "IDLE" not in cmd:
                found.append(proc)
        return found

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            now = time.perf_counter() - self.start_time
            for proc in self.workers():
                try:
                    self.samples.setdefault(proc.pid, []).append((now, proc.memory_info().rss / 1e6))
                except psutil.Error:
                    continue
            self.stop.wait(self.every)

    def growth(self, startup: float, seconds: float) -> Dict[str, Any]:
        """Per linking worker: RSS once ``startup`` and a tenth of the linking ``seconds`` have passed, at half
        time and at the end; growth after warm-up and over the second half, in percent."""
        warm_after = startup + 0.1 * seconds
        end = max((s[-1][0] for s in self.samples.values() if s), default=0.0)
        half = warm_after + 0.5 * (end - warm_after)
        per_worker = {}
        for pid, samples in self.samples.items():
            if samples[-1][0] - samples[0][0] < 0.5 * seconds:  # a short-lived helper process, not a linking worker
                continue
            warm = next((rss for t, rss in samples if t >= warm_after), samples[-1][1])
            mid = next((rss for t, rss in samples if t >= half), samples[-1][1])
            last = samples[-1][1]
            per_worker[str(pid)] = {"warm_rss_mb": warm, "half_rss_mb": mid, "last_rss_mb": last,
                                    "growth_pct": 100.0 * (last - warm) / warm,
                                    "second_half_growth_pct": 100.0 * (last - mid) / mid, "samples": len(samples)}
        return {"workers": per_worker, "warm_after_s": warm_after,
                "max_growth_pct": max((w["growth_pct"] for w in per_worker.values()), default=None),
                "max_second_half_growth_pct": max((w["second_half_growth_pct"] for w in per_worker.values()),
                                                  default=None)}


def soak(name: str, fn, every: float, ray: bool) -> Dict[str, Any]:
    if name == "pipe1":  # the reference: its process also holds every output Doc, so its RSS says nothing
        return fn()
    sampler = Sampler(every, ray)
    sampler.start()
    try:
        result = fn()
    finally:
        sampler.stop.set()
        sampler.join()
    # start-up (model load, trie, warm-up; for Ray also actor start) is measured by the engine itself
    return {**result, **sampler.growth(result["startup_s"], result["seconds"])}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kb, kb_path = cached_kb(args.kb_source, args.cache_dir)
    model_dir = args.model or cached_model(kb, kb_path, args.cache_dir, size=args.size)
    base, _ = read_documents(args.corpus)
    docs = repeat_documents(base, args.mentions)
    mentions = sum(len(d[2]) for d in docs)
    print(f"{len(docs)} documents, {mentions} mentions", flush=True)
    report: Dict[str, Any] = {"machine": machine(), "mentions_asked": args.mentions, "mentions": mentions,
                              "documents": len(docs),
                              "model": str(args.model) if args.model else f"untrained init-model --size {args.size}",
                              "kb": args.kb_source.name, "engines": {}}
    top1: Dict[str, List[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        runs = {"pipe1": lambda: run_pipe(docs, model_dir, kb_path, args, n_process=1),
                "pipe2": lambda: run_pipe(docs, model_dir, kb_path, args, n_process=2),
                "ray2": lambda: run_ray(docs, model_dir, kb_path, args, workers=2, tmp=Path(tmp))}
        for name, fn in runs.items():
            print(f"{name} ...", flush=True)
            started = time.perf_counter()
            result = soak(name, fn, args.every, ray=name.startswith("ray"))
            top1[name] = result.pop("_top1")
            result["wall_s"] = time.perf_counter() - started
            report["engines"][name] = result
            print(f"{name}: {result['mentions']} mentions, max worker RSS growth {result.get('max_growth_pct')}, "
                  f"second half {result.get('max_second_half_growth_pct')}", flush=True)
            write_json_atomic(args.json, report)
    reference = top1["pipe1"]
    report["equal_to_one_process"] = {n: t == reference for n, t in top1.items()}
    report["mismatches"] = {n: sum(a != b for a, b in zip(reference, t)) for n, t in top1.items()}
    write_json_atomic(args.json, report)
    print({"equal_to_one_process": report["equal_to_one_process"],
           "max_growth_pct": {n: r.get("max_growth_pct") for n, r in report["engines"].items()},
           "max_second_half_growth_pct": {n: r.get("max_second_half_growth_pct") for n, r in report["engines"].items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

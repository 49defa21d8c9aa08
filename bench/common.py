"""Shared set-up for the benchmarks: cached KB / model / trie, machine description, RSS, stats.

Benchmark code only (run as scripts from the repository root); the ``spacy_angel`` package
never imports it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from spacy_angel.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "bench"  # /.cache/ is git-ignored
DATA = Path(os.environ.get("SPACY_ANGEL_DATA", REPO.parent / "shared" / "data"))
DEFAULT_CORPUS = DATA / "ncbi-disease" / "NCBItestset_corpus.txt"
DEFAULT_KB_SOURCE = DATA / "medic" / "CTD_diseases_2017.tsv.gz"


def add_setup_arguments(p: "argparse.ArgumentParser", corpus_help: str) -> None:
    """``--corpus --kb-source --cache-dir --model``: what the linking benches set up alike."""
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help=corpus_help)
    p.add_argument("--kb-source", type=Path, default=DEFAULT_KB_SOURCE, help="KB source file (CTD/MEDIC, BioSyn, ...)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the built KB, model and trie are kept")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: an untrained init_model size=small)")


def _key(*parts: Any) -> str:
    return hashlib.sha1("\x00".join(str(p) for p in parts).encode("utf8")).hexdigest()[:12]


def cached_kb(source: Path, cache_dir: Path):
    """The KB built from ``source``, cached as a KB directory keyed by path, size and mtime."""
    from spacy_angel.kb.readers import load_files
    from spacy_angel.kb.store import KnowledgeBase

    source = Path(source).resolve()
    stat = source.stat()
    path = cache_dir / f"kb-{source.name}-{_key(source, stat.st_size, stat.st_mtime_ns)}"
    if (path / "kb.json").exists():
        return KnowledgeBase.from_disk(path), path
    kb = load_files([source])
    kb.to_disk(path)  # atomic (temp dir + rename)
    return kb, path


def cached_model(kb, kb_path: Path, cache_dir: Path, size: str = "small", seed: int = 0) -> Path:
    """An untrained ``init_model(kb, size=...)`` directory, created once per KB."""
    from spacy_angel.seq2seq.offline_init import init_model

    path = cache_dir / f"model-{size}-seed{seed}-{kb_path.name}"
    if not (path / "config.json").exists():
        init_model(kb, path, size=size, seed=seed)  # atomic
    return path


def trie_path_for(model_dir: Path, kb_path: Path, cache_dir: Path) -> Path:
    """Where to keep the trie of (model, KB); ``load_or_build_trie`` rebuilds it if stale."""
    return cache_dir / f"trie-{_key(Path(model_dir).resolve(), kb_path.resolve())}"


def machine() -> Dict[str, Any]:
    """CPU model, cores, memory, library versions: what the numbers were measured on."""
    import numpy
    import torch
    import transformers

    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L3 cache"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        with open("/proc/meminfo", encoding="utf8") as fh:
            info["MemTotal"] = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def current_rss_mb() -> float:
    """Resident set size now (from /proc, Linux), in MB."""
    with open("/proc/self/statm", encoding="utf8") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _status_mb(field: str) -> Optional[float]:
    """A kB field of ``/proc/self/status`` (Linux) in MB; None where there is none."""
    try:
        with open("/proc/self/status", encoding="utf8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None


def anon_rss_mb() -> float:
    """The private part of RSS now (``RssAnon``), in MB: what mapped files' page-cache pages, shared and
    reclaimable, do not count in. A mapped file's RSS grows by far more than a process reads (the kernel
    maps cached pages around each fault: 2,000 random bytes of the 6M-name index mapped 337 MB in a probe)."""
    value = _status_mb("RssAnon")
    return float("nan") if value is None else value


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    ``VmHWM`` from /proc: unlike ``ru_maxrss`` it is reset by ``exec``, so a worker started
    from a big parent process does not inherit the parent's peak.
    """
    value = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6 if value is None else value


class TreeMemoryPeak:
    """The peak memory of this process and its children together, sampled every ``interval`` seconds on a
    thread: ``rss_mb`` (the largest sum of RSS, which counts a page two processes share twice: an upper
    bound) and ``pss_mb`` (the largest sum of PSS: shared pages split, the machine's real cost).

    Why: ``kb build`` forks workers for the TF-IDF fit, and this process's own peak (``VmHWM``) leaves
    their memory out. A sample can miss a spike shorter than ``interval``; ``peak_rss_mb()`` still
    bounds this process alone."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.interval, self.rss_mb, self.pss_mb = interval, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        rss = pss = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss, pss = rss + info.rss / 1e6, pss + getattr(info, "pss", info.rss) / 1e6
        self.rss_mb, self.pss_mb = max(self.rss_mb, rss), max(self.pss_mb, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "TreeMemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def rank_aligned_recall(want: List[list], got: List[list]) -> float:
    """Recall of exact ``(name, cosine)`` rows, rank by rank: the found cosine at each rank is at least the exact
    one there (ties interchangeable). Stricter than the share of the exact top-k found
    (``spacy_angel.retrieval.ann_search.recall_of_exact``): one missed name fails every later rank whose
    cosine drops."""
    found = total = 0
    for w, g in zip(want, got):
        scores = [s for _, s in g] + [0.0] * len(w)
        found += sum(scores[i] >= s - 1e-6 for i, (_, s) in enumerate(w))
        total += len(w)
    return found / max(total, 1)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_worker(script: Path, args: List[str], timeout: Optional[float] = None) -> Dict[str, Any]:
    """Run ``script args`` in a fresh interpreter; its last stdout line is a JSON object."""
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=str(REPO)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {script.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

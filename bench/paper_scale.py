"""What the published ANGEL checkpoint's shape costs on this CPU: BART-large (12 + 12 layers, d 1024,
50,265-row output layer), random weights, linking MEDIC with 5 beams.

The weights are untrained (``spacy-angel init-model --size large``): the figures are speed and memory
only. Beam search is constrained by the KB trie, so an untrained model still walks real KB names; its
beams may run longer or shorter than a trained model's, so treat the rates as an order of magnitude.
Each setting runs in a fresh process (peak RSS is its own): beam and hybrid in float32 and bfloat16,
hybrid in int8. Beam lengths differ between dtypes of an untrained model, so each setting also times an
equal piece of work: teacher-forced scores of 20 fixed KB names per mention (``scoring_names_per_s``),
which compares the dtypes' speed on the same computation.

    .venv/bin/python bench/paper_scale.py [--mentions 32] [--json docs/results/paper_scale.json]

``scripts/gpu_smoke.sh`` runs the same script on a GPU when one is lent (``--device cuda``).
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    DEFAULT_CACHE,
    REPO,
    cached_kb,
    current_rss_mb,
    machine,
    peak_rss_mb,
    trie_path_for,
    write_json_atomic,
)

MEDIC = DATA / "medic" / "CTD_diseases_2017.tsv.gz"
DEV = DATA / "biosyn" / "ncbi-disease" / "processed_dev"
SETTINGS = {"beam": ("beam", None), "hybrid": ("hybrid", None), "hybrid_int8": ("hybrid", "int8"),
            "beam_bf16": ("beam", "bfloat16"), "hybrid_bf16": ("hybrid", "bfloat16")}
NAMES_SCORED = 20  # fixed KB names per mention for the equal-work timing


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mentions", type=int, default=32, help="NCBI-disease dev mentions linked per setting")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "paper_scale.json")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def large_model(cache_dir: Path):
    from spacy_angel.seq2seq.offline_init import init_model

    kb, kb_path = cached_kb(MEDIC, cache_dir)
    path = cache_dir / f"model-large-seed0-{kb_path.name}"
    if not (path / "config.json").exists():
        init_model(kb, path, size="large", seed=0)
    return kb_path, path


def worker(setting: str, model_dir: str, kb_path: str, args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.types import Mention

    torch.set_num_threads(args.threads)
    mode, dtype = SETTINGS[setting]
    linker = AngelLinker.from_pretrained(model_dir, kb_path, trie_path=trie_path_for(Path(model_dir), Path(kb_path), args.cache_dir),
                                         device=args.device, dtype=dtype, num_beams=5, batch_size=16)
    surfaces = []
    for f in sorted(glob.glob(str(DEV / "*.concept"))):
        with open(f, encoding="utf-8") as fh:
            surfaces.extend(line.split("||")[3] for line in fh if line.count("||") >= 4)
    mentions = [Mention(str(i), s, 0, len(s)) for i, s in enumerate(surfaces[: args.mentions])]
    linker.link(mentions[:4], top_k=5, mode=mode)
    linker.clear_cache()
    t0 = time.perf_counter()
    linker.link(mentions, top_k=5, mode=mode)
    seconds = time.perf_counter() - t0
    names = [[(i * NAMES_SCORED + j) % linker.kb.num_names for j in range(NAMES_SCORED)] for i in range(len(mentions))]
    encoded = [linker.encode(m) for m in mentions]
    t0 = time.perf_counter()
    for lo in range(0, len(mentions), linker.batch_size):
        linker.decoder.score_names(encoded[lo : lo + linker.batch_size], names[lo : lo + linker.batch_size])
    scoring_s = time.perf_counter() - t0
    return {"setting": setting, "mentions": len(mentions), "seconds": seconds, "mentions_per_s": len(mentions) / seconds,
            "scoring_names_per_s": len(mentions) * NAMES_SCORED / scoring_s,
            "rss_mb": current_rss_mb(), "peak_rss_mb": peak_rss_mb(),
            "parameters": sum(p.numel() for p in linker.model.parameters())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)), flush=True)
        return 0
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kb_path, model_dir = large_model(args.cache_dir)
    report: Dict[str, Any] = {"machine": machine(), "model": "untrained init-model --size large (BART-large shape)",
                              "kb": MEDIC.name, "device": args.device, "threads": args.threads, "settings": {}}
    for setting in SETTINGS:
        if SETTINGS[setting][1] == "int8" and args.device != "cpu":  # dynamic int8 runs on the CPU only ([E008])
            report.setdefault("skipped", []).append(setting)
            continue
        cmd = [sys.executable, __file__, "--mentions", str(args.mentions), "--device", args.device, "--threads",
               str(args.threads), "--cache-dir", str(args.cache_dir), "--worker", setting, str(model_dir), str(kb_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
        if proc.returncode != 0:
            raise RuntimeError(f"{setting} failed:\n{proc.stderr[-3000:]}")
        report["settings"][setting] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(report["settings"][setting]), flush=True)
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

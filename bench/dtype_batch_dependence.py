"""Does a mention's link depend on the other mentions in its batch? Per model dtype (float32, bfloat16, int8).

Why: ``dtype="int8"`` (``spacy_angel/seq2seq/loading.py``) quantises each linear layer's input with one
scale per call, taken from the whole batch, so a mention's scores move with its batch mates; bfloat16
rounds weights and activations but has no such shared scale. This bench links the same mentions twice
per dtype, once in batches (``--batch-size``) and once one at a time, each with a fresh linker (no result
cache between them), and counts top-1 changes and score differences of the top-1 concept. It is the
measurement behind the CPU's default dtype (docs/performance.md):

    python bench/dtype_batch_dependence.py --model projects/angel/training/cpu/angel --limit 256 \\
        --json docs/results/dtype_batch_dependence.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_setup_arguments,
    cached_kb,
    cached_model,
    machine,
    median,
    trie_path_for,
    write_json_atomic,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(p, "PubTator file with the mentions to link")
    p.add_argument("--limit", type=int, default=256, help="mentions linked (each also alone)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--dtypes", default="float32,bfloat16,int8")
    p.add_argument("--json", type=Path, required=True)
    return p.parse_args(argv)


def compare(batched: List[list], alone: List[list]) -> Dict[str, Any]:
    """Top-1 changes, and |score difference| of the top-1 concept where both agree on it."""
    same = [abs(a[0].score - b[0].score) for a, b in zip(batched, alone) if a and b and a[0].kb_ids == b[0].kb_ids]
    flips = sum(1 for a, b in zip(batched, alone) if (a[0].kb_ids if a else None) != (b[0].kb_ids if b else None))
    return {"mentions": len(batched), "top1_changed": flips, "top1_score_diff_max": max(same, default=0.0),
            "top1_score_diff_median": median(same) if same else 0.0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from spacy_angel.linking.linker import AngelLinker
    from training.data.corpora import read_pubtator

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kb, kb_path = cached_kb(args.kb_source, args.cache_dir)
    model_dir = args.model or cached_model(kb, kb_path, args.cache_dir, size="small")
    trie_path = trie_path_for(model_dir, kb_path, args.cache_dir)
    mentions = list(read_pubtator(args.corpus))[: args.limit]
    rows: Dict[str, Any] = {}

    def linker(dtype: str) -> AngelLinker:  # a fresh one per side: no cached result answers both
        return AngelLinker.from_pretrained(model_dir, kb, trie_path=trie_path, device="cpu", dtype=dtype,
                                           num_beams=args.num_beams, batch_size=args.batch_size)

    for dtype in args.dtypes.split(","):
        batched = linker(dtype).link(mentions, top_k=1)
        single = linker(dtype)
        alone = [single.link([m], top_k=1)[0] for m in mentions]
        rows[dtype] = compare(batched, alone)
        print(dtype, rows[dtype], flush=True)
    command = "python bench/dtype_batch_dependence.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(args.json, {"command": command, "model": str(model_dir), "corpus": str(args.corpus),
                                  "batch_size": args.batch_size, "num_beams": args.num_beams,
                                  "machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

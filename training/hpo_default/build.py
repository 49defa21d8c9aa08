"""The staged build of the offline default, cached stage by stage in ``state.json``.

Stages: ``kb`` (split), ``init`` (BART + BPE with the recipe's dimensions), ``positive``,
``eval_positive`` (TF-IDF baseline too), ``dpo``, ``eval_dpo``, ``pipeline`` (entity ruler +
``angel_linker`` on the model with the better *dev* Acc@1). Every stage writes atomically and is
recorded when done, so an interrupted build resumes at the stage it was in (the training stages
also resume from their last checkpoint) and a finished build is only loaded. The recipe and the
ontology file key the cache: a change to either rebuilds from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from spacy_angel.fileio import atomic_directory, atomic_write_json
from spacy_angel.kb.readers import load_files
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Mention
from training.hpo_default import data
from training.hpo_default.recipe import Recipe

MODEL_NAME = "hpo-default"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
STAGES = ("kb", "init", "positive", "eval_positive", "dpo", "eval_dpo", "fuse", "pipeline")


def say(message: str) -> None:
    """Progress of the build on stderr (stdout is for the linked entities)."""
    print(f"[hpo-default {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _training_log(path: Path) -> Dict[str, Any]:
    return json.loads((path / "training_log.json").read_text(encoding="utf-8"))


def _accuracy(predictions: Sequence[Any], kb: KnowledgeBase, mentions: Sequence[Mention]) -> Dict[str, float]:
    from training.evaluation.metrics import accuracy_at_k

    acc = accuracy_at_k(predictions, [m.gold_ids for m in mentions], ks=(1, 5), kb=kb)
    return {"acc1": round(acc["acc@1"], 4), "acc5": round(acc["acc@5"], 4), "n": len(mentions)}


def heldout_accuracy(model_dir: Path, kb: KnowledgeBase, mentions: Sequence[Mention], recipe: Recipe) -> Dict[str, float]:
    """Acc@1/Acc@5 of constrained beam search on held-out synonyms (against the training KB)."""
    from spacy_angel.linking.linker import AngelLinker

    linker = AngelLinker.from_pretrained(model_dir, kb, device="cpu", num_beams=recipe.num_beams, batch_size=recipe.eval_batch)
    return _accuracy(linker.link(list(mentions), top_k=min(5, recipe.num_beams)), kb, mentions)


def tfidf_accuracy(index: Any, kb: KnowledgeBase, mentions: Sequence[Mention]) -> Dict[str, float]:
    """The same metric for the char 3-gram TF-IDF nearest name."""
    return _accuracy(index.link([m.surface for m in mentions], k=5), kb, mentions)


def build_pipeline(model_dir: Path, kb_dir: Path, patterns: List[Dict[str, str]], num_beams: int = 5) -> Any:
    """Blank English + ``entity_ruler`` (case-insensitive HPO phrases) + ``angel_linker``.

    The linker reads no context words (``context_window=0``): the model was trained on KB
    names alone, so the surrounding sentence would only be an input it has never seen.
    """
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401  (registers the factory without the entry point)

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False})
    ruler.add_patterns(patterns)
    config = {
        "model": str(model_dir), "kb": str(kb_dir), "num_beams": num_beams, "top_k": 3, "context_window": 0,
        "device": "cpu", "mode": "hybrid",  # fusion weights: the model directory's fusion.json (stage_fuse)
    }
    nlp.add_pipe("angel_linker", config=config)
    return nlp


class Build:
    """Runs the stages in order, skipping those already recorded in ``state.json``."""

    def __init__(self, root: Path, recipe: Recipe, obo: Path) -> None:
        self.root = root
        self.recipe = recipe
        self.obo = obo
        self._name_index: Any = None
        self.fingerprint = recipe.fingerprint(data.file_digest(obo))
        self.state: Dict[str, Any] = {}
        state_path = root / STATE_FILE
        if state_path.is_file():
            try:
                self.state = json.loads(state_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.state = {}
        if self.state.get("fingerprint") != self.fingerprint:
            if root.exists():
                say(f"recipe or ontology changed: rebuilding {root}")
                shutil.rmtree(root)
            self.state = {"fingerprint": self.fingerprint, "recipe": dataclasses.asdict(recipe), "stages": {}}
        root.mkdir(parents=True, exist_ok=True)

    @property
    def done(self) -> bool:
        return "pipeline" in self.state["stages"] and (self.root / METRICS_FILE).is_file()

    def _stage(self, name: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        if name in self.state["stages"]:
            return self.state["stages"][name]
        from training.runs.bookkeeping import peak_rss_mb  # only while building: keeps the cached start-up light

        say(f"stage {name} ...")
        started = time.time()
        info = fn() or {}
        info["seconds"] = round(time.time() - started, 1)
        info["peak_rss_mb"] = round(peak_rss_mb(include_children=True), 1)
        self.state["stages"][name] = info
        atomic_write_json(self.root / STATE_FILE, self.state)
        say(f"stage {name} done in {info['seconds']}s: {json.dumps({k: v for k, v in info.items() if k != 'seconds'})}")
        return info

    def name_index(self, train_kb: KnowledgeBase) -> Any:
        """The training KB's TF-IDF index, fitted once per build (evaluation, DPO negatives, fusion)."""
        if self._name_index is None:
            from spacy_angel.retrieval.tfidf import NameIndex

            self._name_index = NameIndex(train_kb).fit()
        return self._name_index

    def kb(self, which: str) -> KnowledgeBase:
        return KnowledgeBase.from_disk(self.root / f"kb-{which}")

    def split(self) -> Tuple[List[Mention], List[Mention]]:
        return data.split_from_json(json.loads((self.root / "split.json").read_text(encoding="utf-8")))

    # -- the stages
    def stage_kb(self) -> Dict[str, Any]:
        full = load_files([self.obo], format="obo")
        split = data.split_synonyms(full, self.recipe.n_dev, self.recipe.n_test, seed=self.recipe.seed)
        full.to_disk(self.root / "kb-full")
        split.train_kb.to_disk(self.root / "kb-train")
        atomic_write_json(self.root / "split.json", data.split_to_json(split))
        counts = {"concepts": len(full.concept_ids), "names": full.num_names, "train_names": split.train_kb.num_names}
        return {**counts, "dev": len(split.dev), "test": len(split.test)}

    def stage_init(self, train_kb: KnowledgeBase) -> Dict[str, Any]:
        from spacy_angel.seq2seq.offline_init import init_model

        path = init_model(train_kb, self.root / "init", dims=self.recipe.dims(), seed=self.recipe.seed)
        return {"dir": str(path)}

    def stage_positive(self, train_kb: KnowledgeBase) -> Dict[str, Any]:
        from transformers import AutoTokenizer

        from training.stages.positive import train_positive

        r = self.recipe
        copy_file = None
        if r.copy_examples:
            tokenizer = AutoTokenizer.from_pretrained(self.root / "init")
            copy_file = data.copy_examples_file(train_kb, self.root / "copy.jsonl", tokenizer)
        train_positive(self.root / "init", train_kb, [], self.root / "positive", r.positive(copy_file))
        log = _training_log(self.root / "positive")
        examples = log["data"]["train_examples"]
        done = log.get("global_step", 0)
        return {
            "steps_done": done,
            "epochs_done": round(done * r.positive_batch / examples, 2),
            "examples": examples,
            "final_loss": log["loss"][-1]["loss"] if log.get("loss") else None,
            "seconds_per_step": round(log["wall_time_s"] / max(done, 1), 3),
            "safety_cap": log.get("safety_cap"),
        }

    def stage_eval(self, model: str, train_kb: KnowledgeBase, dev: List[Mention], test: List[Mention]) -> Dict[str, Any]:
        out = {
            "dev": heldout_accuracy(self.root / model, train_kb, dev, self.recipe),
            "test": heldout_accuracy(self.root / model, train_kb, test, self.recipe),
        }
        if model == "positive":
            index = self.name_index(train_kb)
            out.update(tfidf_dev=tfidf_accuracy(index, train_kb, dev), tfidf_test=tfidf_accuracy(index, train_kb, test))
        return out

    def stage_dpo(self, train_kb: KnowledgeBase) -> Dict[str, Any]:
        from training.examples.pair_files import write_pairs
        from training.stages.preference import train_preference

        r = self.recipe
        pairs = data.tfidf_pairs(train_kb, self.name_index(train_kb), r.dpo_pairs, r.dpo_negatives, r.seed)
        write_pairs(pairs, self.root / "dpo_pairs.jsonl")
        train_preference(self.root / "positive", train_kb, pairs, self.root / "dpo", r.preference())
        log = _training_log(self.root / "dpo")
        keys = ("global_step", "margin_before", "margin_after", "pair_accuracy_before", "pair_accuracy_after", "safety_cap")
        return {"pairs": len(pairs), **{k: log.get(k) for k in keys}}

    def chosen_model(self) -> str:
        """The model the pipeline ships: DPO unless it lowered dev Acc@1 (chosen on dev only)."""
        before = self.state["stages"]["eval_positive"]["dev"]["acc1"]
        after = self.state["stages"]["eval_dpo"]["dev"]["acc1"]
        return "dpo" if after >= before else "positive"

    def stage_fuse(self, train_kb: KnowledgeBase, dev: List[Mention], test: List[Mention]) -> Dict[str, Any]:
        """Hybrid linking for the chosen model: fusion weights fitted on dev (fusion.json), then scored."""
        from spacy_angel.linking.linker import AngelLinker
        from training.stages.fuse import fit_linker_fusion

        r = self.recipe
        model_dir = self.root / self.chosen_model()
        linker = AngelLinker.from_pretrained(
            model_dir, train_kb, device="cpu", num_beams=r.num_beams, batch_size=r.eval_batch, mode="hybrid",
            name_index=self.name_index(train_kb),
        )
        weights, _ = fit_linker_fusion(linker, dev, seed=r.seed, progress=False)
        weights.to_disk(model_dir)  # the pipeline's angel_linker reads it from the model directory
        linker.fusion = weights
        return {
            "model": model_dir.name,
            "weights": weights.to_dict(),
            "dev": _accuracy(linker.link(list(dev), top_k=5), train_kb, dev),
            "test": _accuracy(linker.link(list(test), top_k=5), train_kb, test),
        }

    def stage_pipeline(self) -> Dict[str, Any]:
        chosen = self.chosen_model()
        patterns = data.ruler_patterns(self.kb("full"), data.phenotype_terms(self.obo))
        nlp = build_pipeline(self.root / chosen, self.root / "kb-full", patterns, self.recipe.num_beams)
        with atomic_directory(self.root / "pipeline") as tmp:  # a half-written pipeline never loads
            nlp.to_disk(tmp)
        return {"model": chosen, "patterns": len(patterns)}

    def run(self) -> Dict[str, Any]:
        """Every stage not yet done, then ``metrics.json``; returns the metrics."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.recipe.threads)
        try:
            return self._run_stages()
        finally:
            torch.set_num_threads(before)  # the caller's linking afterwards uses the machine's cores

    def _run_stages(self) -> Dict[str, Any]:
        import torch

        torch.manual_seed(self.recipe.seed)
        self._stage("kb", self.stage_kb)
        train_kb = self.kb("train")
        dev, test = self.split()
        self._stage("init", lambda: self.stage_init(train_kb))
        self._stage("positive", lambda: self.stage_positive(train_kb))
        self._stage("eval_positive", lambda: self.stage_eval("positive", train_kb, dev, test))
        self._stage("dpo", lambda: self.stage_dpo(train_kb))
        self._stage("eval_dpo", lambda: self.stage_eval("dpo", train_kb, dev, test))
        self._stage("fuse", lambda: self.stage_fuse(train_kb, dev, test))
        self._stage("pipeline", self.stage_pipeline)
        metrics = self.metrics()
        atomic_write_json(self.root / METRICS_FILE, metrics)
        return metrics

    def metrics(self) -> Dict[str, Any]:
        s = self.state["stages"]
        cuts = {k: s[k]["safety_cap"] for k in ("positive", "dpo") if s[k].get("safety_cap")}
        return {
            "model": s["pipeline"]["model"],
            "heldout_synonyms": {"dev": s["kb"]["dev"], "test": s["kb"]["test"]},
            "tfidf": {"dev": s["eval_positive"]["tfidf_dev"], "test": s["eval_positive"]["tfidf_test"]},
            "positive": {"dev": s["eval_positive"]["dev"], "test": s["eval_positive"]["test"]},
            "dpo": {"dev": s["eval_dpo"]["dev"], "test": s["eval_dpo"]["test"]},
            "hybrid": {"dev": s["fuse"]["dev"], "test": s["fuse"]["test"], "model": s["fuse"]["model"]},
            "steps": {"positive": s["positive"]["steps_done"], "dpo": s["dpo"]["global_step"]},
            "cut_by_safety_cap": cuts,
            "stage_seconds": {k: v["seconds"] for k, v in s.items()},
            "build_seconds": round(sum(v["seconds"] for v in s.values()), 1),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in s.values()),
            "stages": s,
            "recipe": self.state["recipe"],
            "torch_threads": self.recipe.threads,
        }

"""A linker for any vocabulary from its names alone (``spacy-angel train kb-linker``), built stage by
stage and cached in ``state.json``; the offline HPO default is one such build.

Stages: ``kb`` (held-out synonym split), ``init`` (BART + BPE with the recipe's dimensions),
``positive``, ``eval_positive`` (TF-IDF baseline too), ``dpo``, ``eval_dpo``, ``encoder`` (the dense
name encoder, trained on the training KB's synonym sets, saved in the chosen model), ``fuse`` (hybrid
weights on dev), ``pipeline`` (an optional KB-name entity ruler + ``angel_linker`` on the model
with the better *dev* Acc@1: a DPO stage that lowers dev is never shipped). Every stage writes
atomically and is recorded when done, so an interrupted build resumes at the stage it was in (the
training stages also resume from their last checkpoint) and a finished build is only loaded. The
recipe and the KB sources key the cache: a change to either rebuilds from scratch, except for the
settings of the stages after the models (``LATE_STAGES``), which redo only those.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_directory, atomic_write_json, atomic_write_text, check_output_directory
from spacy_angel.kb.readers import load_files, load_kb
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.types import Mention
from training.data.synonym_split import split_from_json, split_synonyms, split_to_json
from training.examples.kb_name_examples import copy_examples_file, tfidf_pairs
from training.stages.fuse import FUSION_MIN_DEV
from training.stages.kb_linker_corpus import UserCorpus, sources_digest
from training.stages.kb_linker_pipeline import build_pipeline, ruler_patterns, write_pipeline
from training.stages.kb_linker_recipe import Recipe

STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
STAGES = ("kb", "init", "positive", "eval_positive", "dpo", "eval_dpo", "encoder", "fuse", "pipeline")
#: the stages after the models, redone when the recipe's late settings change (kb_linker_recipe.LATE_FIELDS)
LATE_STAGES = ("encoder", "fuse", "pipeline")


def say(message: str, name: str = "kb-linker") -> None:
    """Progress of the build on stderr (stdout is for the linked entities)."""
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def load_source_kb(sources: Sequence[Path], kb_format: str = "auto") -> KnowledgeBase:
    """One ``kb build`` directory, or KB files in ``kb_format`` (auto-detected by default)."""
    if len(sources) == 1 and Path(sources[0]).is_dir():
        return load_kb(sources[0])
    return load_files(list(sources), format=kb_format)


def build_fingerprint(recipe: Recipe, sources: Sequence[Path], corpus: UserCorpus) -> str:
    """What keys a build: the recipe, the KB sources and the user's corpus files (none: as before they existed)."""
    return recipe.fingerprint(sources_digest(sources) + (f"+{corpus.digest()}" if corpus.given else ""))


class Build:
    """Runs the stages in order, skipping those already recorded in ``state.json``."""

    def __init__(
        self, root: Path, recipe: Recipe, sources: Sequence[Path], *, kb_format: str = "auto", ruler_keep: Optional[Set[str]] = None,
        entity_label: str = "ENTITY", ruler: bool = True, name: str = "kb-linker", pipeline_dir: Optional[Path] = None,
        source_kb: Optional[KnowledgeBase] = None, corpus: Optional[UserCorpus] = None,
    ) -> None:
        """``sources``: a ``kb build`` directory or KB files (``kb_format``); ``ruler_keep``: the
        concepts whose names the entity ruler matches (None: all); ``pipeline_dir``: where the
        pipeline goes (default ``root/pipeline``); ``source_kb``: ``sources`` already loaded (the
        command sizes its recipe on it), so the split stage does not read them again; ``corpus``: the
        user's annotated mentions (training and/or dev), which key the build too."""
        self.root = root
        self.recipe = recipe
        self.sources = [Path(p) for p in sources]
        self.kb_format = kb_format
        self.ruler_keep = ruler_keep
        self.entity_label = entity_label
        self.ruler = ruler
        self.name = name
        self.pipeline_dir = pipeline_dir if pipeline_dir is not None else root / "pipeline"
        self.source_kb = source_kb
        self._name_index: Any = None
        self.corpus = corpus if corpus is not None else UserCorpus()
        self.fingerprint = build_fingerprint(recipe, self.sources, self.corpus)
        self.state: Dict[str, Any] = {}
        state_path = root / STATE_FILE
        if state_path.is_file():
            try:
                self.state = json.loads(state_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.state = {}
        if self.state.get("fingerprint") != self.fingerprint:
            if root.exists():
                say(f"recipe or KB changed: rebuilding {root}", name)
                shutil.rmtree(root)
            self.state = {"fingerprint": self.fingerprint, "recipe": dataclasses.asdict(recipe), "stages": {}}
        root.mkdir(parents=True, exist_ok=True)
        late = recipe.late_fingerprint()
        if self.state.get("late_fingerprint") != late:
            redo = [k for k in LATE_STAGES if k in self.state["stages"]]
            if redo:
                say(f"encoder or fusion settings changed: redoing {', '.join(redo)}", name)
            for key in redo:
                del self.state["stages"][key]
            self.state.update(late_fingerprint=late, recipe=dataclasses.asdict(recipe))
            atomic_write_json(root / STATE_FILE, self.state)

    @property
    def done(self) -> bool:
        return "pipeline" in self.state["stages"] and (self.root / METRICS_FILE).is_file()

    def _stage(self, name: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        if name in self.state["stages"]:
            return self.state["stages"][name]
        from training.runs.bookkeeping import peak_rss_mb  # only while building: keeps the cached start-up light

        say(f"stage {name} ...", self.name)
        started = time.time()
        info = fn() or {}
        info["seconds"] = round(time.time() - started, 1)
        info["peak_rss_mb"] = round(peak_rss_mb(include_children=True), 1)
        self.state["stages"][name] = info
        atomic_write_json(self.root / STATE_FILE, self.state)
        say(f"stage {name} done in {info['seconds']}s: {json.dumps({k: v for k, v in info.items() if k != 'seconds'})}", self.name)
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
        return split_from_json(json.loads((self.root / "split.json").read_text(encoding="utf-8")))

    # -- the stages
    def stage_kb(self) -> Dict[str, Any]:
        full = self.source_kb if self.source_kb is not None else load_source_kb(self.sources, self.kb_format)
        split = split_synonyms(full, self.recipe.n_dev, self.recipe.n_test, seed=self.recipe.seed)
        full.to_disk(self.root / "kb-full")
        split.train_kb.to_disk(self.root / "kb-train")
        atomic_write_json(self.root / "split.json", split_to_json(split))
        counts = {"concepts": len(full.concept_ids), "names": full.num_names, "train_names": split.train_kb.num_names}
        return {**counts, "dev": len(split.dev), "test": len(split.test)}

    def stage_init(self, train_kb: KnowledgeBase) -> Dict[str, Any]:
        from spacy_angel.seq2seq.offline_init import init_model

        path = init_model(train_kb, self.root / "init", dims=self.recipe.dims(), seed=self.recipe.seed)
        return {"dir": str(path)}

    def stage_positive(self, train_kb: KnowledgeBase, mentions: Sequence[Mention]) -> Dict[str, Any]:
        from transformers import AutoTokenizer

        from training.stages.positive import train_positive

        r = self.recipe
        copy_file = None
        if r.copy_examples or r.synonym_targets:
            tokenizer = AutoTokenizer.from_pretrained(self.root / "init")
            copy_file = copy_examples_file(
                train_kb, self.root / "copy.jsonl", tokenizer, copies=r.copy_examples, synonym_targets=r.synonym_targets
            )
        train_positive(self.root / "init", train_kb, list(mentions), self.root / "positive", r.positive(copy_file))
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
            "corpus_mentions": len(mentions),
        }

    def stage_eval(self, model: str, train_kb: KnowledgeBase, dev: List[Mention], test: List[Mention],
                   corpus_dev: Sequence[Mention] = ()) -> Dict[str, Any]:
        out = {
            "dev": heldout_accuracy(self.root / model, train_kb, dev, self.recipe),
            "test": heldout_accuracy(self.root / model, train_kb, test, self.recipe),
        }
        if corpus_dev:  # the user's dev set: what the DPO choice reads
            out["corpus_dev"] = heldout_accuracy(self.root / model, train_kb, corpus_dev, self.recipe)
        if model == "positive":
            index = self.name_index(train_kb)
            out.update(tfidf_dev=tfidf_accuracy(index, train_kb, dev), tfidf_test=tfidf_accuracy(index, train_kb, test))
        return out

    def stage_dpo(self, train_kb: KnowledgeBase) -> Dict[str, Any]:
        from training.examples.pair_files import write_pairs
        from training.stages.preference import train_preference

        r = self.recipe
        pairs = tfidf_pairs(train_kb, self.name_index(train_kb), r.dpo_pairs, r.dpo_negatives, r.seed)
        write_pairs(pairs, self.root / "dpo_pairs.jsonl")
        train_preference(self.root / "positive", train_kb, pairs, self.root / "dpo", r.preference())
        log = _training_log(self.root / "dpo")
        keys = ("global_step", "margin_before", "margin_after", "pair_accuracy_before", "pair_accuracy_after", "safety_cap")
        return {"pairs": len(pairs), **{k: log.get(k) for k in keys}}

    def chosen_model(self) -> str:
        """The model the pipeline ships: DPO unless it lowered dev Acc@1 (chosen on dev only: the
        user's dev corpus when given, else the held-out synonyms' dev split)."""
        stages = self.state["stages"]
        key = "corpus_dev" if "corpus_dev" in stages["eval_positive"] else "dev"
        before, after = stages["eval_positive"][key]["acc1"], stages["eval_dpo"][key]["acc1"]
        return "dpo" if after >= before else "positive"

    def stage_encoder(self, train_kb: KnowledgeBase, dev: List[Mention], test: List[Mention],
                      mentions: Sequence[Mention] = ()) -> Dict[str, Any]:
        """The dense name encoder, trained on the training KB's synonym sets and saved as
        ``MODEL/name_encoder`` in the chosen model (the linker and the pipeline load it from there);
        scored alone on the held-out synonyms. Switched off, the chosen model carries none."""
        from spacy_angel.retrieval.dense_index import DenseNameIndex
        from spacy_angel.retrieval.name_encoder import ENCODER_DIR
        from training.stages.name_encoder import train_name_encoder

        target = self.root / self.chosen_model() / ENCODER_DIR
        if not self.recipe.name_encoder:
            if target.exists():
                shutil.rmtree(target)
            return {"enabled": False}
        encoder, log = train_name_encoder(train_kb, self.recipe.encoder(), [(m.surface, m.gold_ids) for m in mentions])
        with atomic_directory(target) as tmp:
            encoder.to_disk(tmp)
        index = DenseNameIndex(train_kb, encoder)
        score = lambda ms: _accuracy(index.link([m.surface for m in ms], k=5), train_kb, ms)  # noqa: E731
        return {"enabled": True, **log, "dev": score(dev), "test": score(test)}

    def stage_fuse(self, train_kb: KnowledgeBase, dev: List[Mention], test: List[Mention],
                   corpus_dev: Sequence[Mention] = ()) -> Dict[str, Any]:
        """Hybrid linking for the chosen model: fusion weights fitted on dev (the user's dev corpus when
        given, else the held-out synonyms' dev split) into fusion.json, then scored."""
        from spacy_angel.linking.linker import AngelLinker
        from training.stages.fuse import fit_linker_fusion

        r = self.recipe
        model_dir = self.root / self.chosen_model()
        linker = AngelLinker.from_pretrained(
            model_dir, train_kb, device="cpu", num_beams=r.num_beams, batch_size=r.eval_batch, mode="hybrid",
            name_index=self.name_index(train_kb),
        )
        fit_on = list(corpus_dev) or dev
        if len(fit_on) >= FUSION_MIN_DEV:
            weights, _ = fit_linker_fusion(linker, fit_on, seed=r.seed, progress=False)
            weights.to_disk(model_dir)  # the pipeline's angel_linker reads it from the model directory
            linker.fusion = weights
        else:  # too few held-out names to fit on (a tiny KB): the documented default weights
            weights = linker.fusion
        out = {
            "model": model_dir.name,
            "weights": weights.to_dict(),
            "dev": _accuracy(linker.link(list(dev), top_k=5), train_kb, dev),
            "test": _accuracy(linker.link(list(test), top_k=5), train_kb, test),
        }
        if corpus_dev:
            out["corpus_dev"] = _accuracy(linker.link(list(corpus_dev), top_k=5), train_kb, list(corpus_dev))
        return out

    def stage_pipeline(self) -> Dict[str, Any]:
        chosen = self.chosen_model()
        patterns = ruler_patterns(self.kb("full"), self.ruler_keep, self.entity_label) if self.ruler else []
        nlp = build_pipeline(self.root / chosen, self.root / "kb-full", patterns, self.recipe.num_beams)
        write_pipeline(nlp, self.pipeline_dir, beside_build=self.pipeline_dir == self.root.parent)
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
        held_out = {m.surface for m in dev + test}
        train_mentions, train_info = self.corpus.mentions("train", train_kb, held_out)
        corpus_dev, dev_info = self.corpus.mentions("dev", train_kb)
        if self.corpus.given:
            self.state["corpus"] = {"train": train_info, "dev": dev_info}
        self._stage("init", lambda: self.stage_init(train_kb))
        self._stage("positive", lambda: self.stage_positive(train_kb, train_mentions))
        self._stage("eval_positive", lambda: self.stage_eval("positive", train_kb, dev, test, corpus_dev))
        self._stage("dpo", lambda: self.stage_dpo(train_kb))
        self._stage("eval_dpo", lambda: self.stage_eval("dpo", train_kb, dev, test, corpus_dev))
        self._stage("encoder", lambda: self.stage_encoder(train_kb, dev, test, train_mentions))
        self._stage("fuse", lambda: self.stage_fuse(train_kb, dev, test, corpus_dev))
        self._stage("pipeline", self.stage_pipeline)
        metrics = self.metrics()
        atomic_write_json(self.root / METRICS_FILE, metrics)
        return metrics

    def metrics(self) -> Dict[str, Any]:
        s = self.state["stages"]
        cuts = {k: s[k]["safety_cap"] for k in ("positive", "dpo", "encoder") if s[k].get("safety_cap")}
        dense = {"dense": {"dev": s["encoder"]["dev"], "test": s["encoder"]["test"]}} if s["encoder"].get("enabled") else {}
        corpus_dev = {key: s[stage]["corpus_dev"] for key, stage in (("positive", "eval_positive"), ("dpo", "eval_dpo"),
                                                                      ("hybrid", "fuse")) if "corpus_dev" in s[stage]}
        user = {"corpus": {**self.state["corpus"], "dev_acc": corpus_dev}} if self.state.get("corpus") else {}
        return {
            **dense,
            **user,
            "model": s["pipeline"]["model"],
            "heldout_synonyms": {"dev": s["kb"]["dev"], "test": s["kb"]["test"]},
            "tfidf": {"dev": s["eval_positive"]["tfidf_dev"], "test": s["eval_positive"]["tfidf_test"]},
            "positive": {"dev": s["eval_positive"]["dev"], "test": s["eval_positive"]["test"]},
            "dpo": {"dev": s["eval_dpo"]["dev"], "test": s["eval_dpo"]["test"]},
            "hybrid": {"dev": s["fuse"]["dev"], "test": s["fuse"]["test"], "model": s["fuse"]["model"]},
            "steps": {"positive": s["positive"]["steps_done"], "dpo": s["dpo"]["global_step"],
                      **({"encoder": s["encoder"]["steps_done"]} if dense else {})},
            "cut_by_safety_cap": cuts,
            "stage_seconds": {k: v["seconds"] for k, v in s.items()},
            "build_seconds": round(sum(v["seconds"] for v in s.values()), 1),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in s.values()),
            "stages": s,
            "recipe": self.state["recipe"],
            "torch_threads": self.recipe.threads,
        }


REPORT_FILE = "kb-linker.json"
OUTPUT_MARKER = ".kb-linker-output"  # marks an OUTPUT directory as kb-linker's own (resumable, replaceable)
CARD_FILE = "README.md"


def heldout_report(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The held-out synonym table of a build: test Acc@1/5 of TF-IDF, beam (the shipped model) and
    hybrid, with n, the build's seconds and peak RSS (``docs/results/kb-linker.json`` rows)."""
    test = lambda key: metrics[key]["test"]  # noqa: E731
    beam = test("dpo" if metrics["model"] == "dpo" else "positive")
    return {
        "n": metrics["heldout_synonyms"]["test"],
        "n_dev": metrics["heldout_synonyms"]["dev"],
        "tfidf_acc1": test("tfidf")["acc1"], "tfidf_acc5": test("tfidf")["acc5"],
        "beam_acc1": beam["acc1"], "beam_acc5": beam["acc5"],
        "hybrid_acc1": test("hybrid")["acc1"], "hybrid_acc5": test("hybrid")["acc5"],
        **({"dense_acc1": test("dense")["acc1"], "dense_acc5": test("dense")["acc5"]} if "dense" in metrics else {}),
        "dev": {k: metrics[k]["dev"]["acc1"] for k in ("tfidf", "positive", "dpo", "dense", "hybrid") if k in metrics},
        "model": metrics["model"],
        "steps": metrics["steps"],
        "seconds": metrics["build_seconds"],
        "peak_rss_mb": metrics["peak_rss_mb"],
        "cut_by_safety_cap": metrics["cut_by_safety_cap"],
        "protocol": "held-out KB synonyms (one per concept, never the preferred name), linked against the KB without them",
        **({"corpus": metrics["corpus"]} if "corpus" in metrics else {}),
    }


def model_card(report: Dict[str, Any], kb_name: str) -> str:
    """The card beside the pipeline: what it links to and how well, on names it never saw."""
    rows = [("TF-IDF (char 3-gram)", "tfidf"), (f"beam ({report['model']} model)", "beam")]
    rows += [("dense name encoder", "dense")] if "dense_acc1" in report else []
    rows += [("hybrid (shipped)", "hybrid")]
    table = "\n".join(f"| {label} | {report[key + '_acc1'] * 100:.1f} | {report[key + '_acc5'] * 100:.1f} |" for label, key in rows)
    return (
        f"# kb-linker pipeline for {kb_name}\n\n"
        "Built by `spacy-angel train kb-linker` from the KB's names alone. Load it with "
        "`spacy.load(this_directory)`; `angel_linker` links the entities already on a Doc.\n\n"
        f"Held-out synonyms ({report['protocol']}), test split, n = {report['n']}:\n\n"
        "| linker | Acc@1 | Acc@5 |\n|---|---:|---:|\n" + table + "\n\n"
        f"Model chosen on dev (n = {report['n_dev']}): {report['model']}. Steps: {report['steps']}. "
        f"Built in {report['seconds'] / 60:.1f} min, peak RSS {report['peak_rss_mb']:.0f} MB.\n"
    )


def plan(kb_path: Path, kb: KnowledgeBase, recipe: Recipe) -> str:
    """What the build will do and about how long it takes, said before it starts."""
    return (
        f"{kb_path}: {len(kb.concept_ids)} concepts, {kb.num_names} names; holding out {recipe.n_dev} dev + "
        f"{recipe.n_test} test synonyms; {recipe.positive_steps} positive + {recipe.dpo_steps} DPO steps, "
        f"expected about {recipe.expected_minutes():.0f} min of training on 2 CPU cores"
    )


def prepare_output(output: Path) -> None:
    """Refuse, before any work, an OUTPUT that holds someone else's files or cannot be written."""
    check_output_directory(output, markers=(OUTPUT_MARKER,), option="OUTPUT")
    existing = next((p for p in [output, *output.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(Errors.E394.format(path=output, err=f"{existing} is not a writable directory"))


def run_kb_linker(kb_path: Path, output: Path, recipe: Recipe, command: Optional[str] = None, **build: Any) -> str:
    """Build (or resume) in ``output/build``, write the pipeline into ``output`` with its report
    (``kb-linker.json``) and model card (``README.md``); returns the card. A killed run's temps in the
    build (a stage's staged model, its previous folder aside: the stage was not recorded, it runs again)
    are removed first; the lock taken over tidies ``output``'s top level only."""
    output.mkdir(parents=True, exist_ok=True)
    (output / OUTPUT_MARKER).touch()  # ours from now on: a rerun after an interruption resumes here
    for left in [*(output / "build").rglob(".*.tmp"), *(output / "build").rglob(".*.tmp.old")]:
        shutil.rmtree(left, ignore_errors=True) if left.is_dir() else left.unlink(missing_ok=True)
    metrics = Build(output / "build", recipe, [kb_path], pipeline_dir=output, **build).run()
    report = {**heldout_report(metrics), "command": command}
    card = model_card(report, kb_path.name)
    atomic_write_json(output / REPORT_FILE, report, indent=1)
    atomic_write_text(output / CARD_FILE, card)
    return card

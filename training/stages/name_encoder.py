"""Training the dense name encoder on a KB's own synonym sets (SapBERT's self-alignment, from scratch).

Each step takes ``batch_size`` concepts with two or more names, two names of each, and pulls each
pair together against the other concepts' names of the batch (symmetric InfoNCE). The encoder is a
linear map of sparse n-gram features (:mod:`spacy_angel.retrieval.name_encoder`), so a step is one
sparse-dense product and a CPU trains 1,000 steps of 512 concepts in a few minutes. Batches come
from ``random.Random(seed)`` and the start from ``torch.Generator().manual_seed(seed)``: the same
KB and settings give the same encoder.
"""
from __future__ import annotations

import random
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from spacy_angel.errors import Errors
from spacy_angel.kb.normalize import normalize_name
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.name_encoder import NameEncoder, NameFeatures
from training.settings import NameEncoderSettings


def synonym_sets(kb: KnowledgeBase, extra: Sequence[Tuple[str, Sequence[str]]] = ()) -> Tuple[List[str], List[List[int]]]:
    """``(texts, sets)``: the KB names, then the ``extra`` surfaces (annotated mentions: surface and gold
    ids) not already among them, and per concept the indices of its texts, for the concepts with at
    least two (the training signal). A mention's surface joins each of its gold concepts' sets."""
    texts = list(kb.names)
    members: Dict[str, set] = {cid: set(kb.name_indices_for(cid)) for cid in kb.concept_ids}
    added: Dict[str, int] = {}  # surfaces that are no KB name -> their index in texts
    for surface, ids in extra:
        name = normalize_name(surface)
        concepts = [c for c in (kb.canonical_id(cid) for cid in ids) if c is not None]
        if not name or not concepts:  # a mention of no concept of this KB teaches nothing here
            continue
        idx = kb.name_index(name)
        if idx is None:
            idx = added.setdefault(name, len(texts))
            if idx == len(texts):
                texts.append(name)
        for concept in concepts:
            members[concept].add(idx)
    return texts, [sorted(m) for m in members.values() if len(m) >= 2]


def _as_torch(rows: Any) -> Any:
    import torch

    coo = rows.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape, check_invariants=False)


def train_name_encoder(
    kb: KnowledgeBase, settings: Optional[NameEncoderSettings] = None, extra: Sequence[Tuple[str, Sequence[str]]] = ()
) -> Tuple[NameEncoder, Dict[str, Any]]:
    """The encoder and a log (steps done, final loss, seconds, safety cap). ``extra``: annotated mentions
    ``(surface, gold ids)`` that join their concepts' synonym sets (how a corpus words the KB's concepts).
    ``ValueError`` (E457) when no concept has two names."""
    import torch
    import torch.nn.functional as F

    s = settings or NameEncoderSettings()
    names, sets = synonym_sets(kb, extra)
    if not sets:
        raise ValueError(Errors.E457)
    features = NameFeatures.fit(names)
    rows = features.transform(names, normalized=True)
    generator = torch.Generator().manual_seed(s.seed)
    projection = torch.nn.Parameter(torch.randn(features.size, s.dim, generator=generator) * s.init_scale)
    optimizer = torch.optim.Adam([projection], lr=s.learning_rate)
    rng = random.Random(s.seed)
    batch = min(s.batch_size, len(sets))
    labels = torch.arange(batch)
    progress = None
    if s.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=s.steps, desc="name encoder", unit="step")
    started, loss_value, cut = time.time(), float("nan"), None
    step = 0
    for step in range(1, s.steps + 1):
        pairs = [rng.sample(group, 2) for group in rng.sample(sets, batch)]
        left = F.normalize(torch.sparse.mm(_as_torch(rows[[a for a, _ in pairs]]), projection), dim=-1)
        right = F.normalize(torch.sparse.mm(_as_torch(rows[[b for _, b in pairs]]), projection), dim=-1)
        logits = left @ right.T / s.temperature
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        if s.max_minutes is not None and time.time() - started > s.max_minutes * 60 and step < s.steps:
            cut = f"cut by the {s.max_minutes} min safety cap after {step} of {s.steps} steps"
            break
    if progress is not None:
        progress.close()
    meta = {"steps": step, "batch_size": batch, "synonym_sets": len(sets), "kb_names": kb.num_names,
            "extra_surfaces": len(names) - kb.num_names, "seed": s.seed}
    encoder = NameEncoder(features, projection.detach().numpy().astype(np.float32), meta)
    log = {"steps_done": step, "final_loss": round(loss_value, 4), "synonym_sets": len(sets),
           "features": features.size, "seconds": round(time.time() - started, 1), "safety_cap": cut}
    return encoder, log

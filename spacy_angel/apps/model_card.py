"""A Hugging Face style ``README.md`` (model card) for every model directory we write.

Why: a model directory travels (hub uploads, ``spacy package``, colleagues' disks) without the
training log's context. The card says what the model links to (the KB, by fingerprint: the
linker only makes sense with the KB it was trained for), how it was trained, what it scored, and,
because biomedical KBs come with terms of use, which data terms follow the weights. The YAML
front matter is what the Hub indexes (``library_name``, ``tags``, ``license``).

Local paths are reduced to their last component so a card never leaks a machine's layout.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Union

from spacy_angel.fileio import atomic_write_text

CARD_FILE = "README.md"


TAGS = ("spacy-angel", "spacy", "entity-linking", "biomedical", "generative-entity-linking", "angel")


# Terms that follow the data into the weights and the KB files; keyed by the id family
# (spacy_angel.kb.id_families.kb_family) found in the KB. Wording is a pointer, not legal advice.
DATA_TERMS: Dict[str, str] = {
    "umls": (
        "**UMLS**: the names come from the UMLS Metathesaurus, used under the UMLS Metathesaurus "
        "License Agreement (https://www.nlm.nih.gov/research/umls/knowledge_sources/metathesaurus/release/license_agreement.html). "
        "Share this model and its KB only with UMLS licensees, and respect the restrictions of the "
        "source vocabularies it includes (e.g. SNOMED CT affiliate terms)."
    ),
    "mesh": (
        "**MeSH / CTD MEDIC**: MeSH is produced by the U.S. National Library of Medicine "
        "(https://www.nlm.nih.gov/databases/download/terms_and_conditions.html). CTD's MEDIC vocabulary "
        "is distributed by the Comparative Toxicogenomics Database for research use under its legal "
        "notice (https://ctdbase.org/about/legal.jsp); cite CTD when you use it."
    ),
    "omim": (
        "**OMIM**: OMIM identifiers and names (as in CTD MEDIC) are copyrighted by Johns Hopkins "
        "University; see https://omim.org/help/agreement before redistributing OMIM content."
    ),
    "hpo": (
        "**HPO**: the Human Phenotype Ontology is free to use under its license "
        "(https://hpo.jax.org/license); state the HPO version you used and do not alter its terms' meaning."
    ),
    "doid": "**Disease Ontology**: released under CC0 1.0 (https://disease-ontology.org).",
    "mondo": "**Mondo**: released under CC BY 4.0 (https://mondo.monarchinitiative.org); attribute it.",
}


def _public(value: Any) -> Any:
    """Strip local directories from path-like strings (a hub id ``org/name`` is kept)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:\\", value)):
        return Path(value).name or value
    return value


def kb_summary(kb: Any, sample: int = 2000) -> Dict[str, Any]:
    """The KB facts a card reports: size, fingerprint and the id families seen among its concepts."""
    from spacy_angel.kb.id_families import kb_family

    families = set()
    for i, kb_id in enumerate(kb.concept_ids):
        if i >= sample:
            break
        family = kb_family(kb_id)
        if family is not None:
            families.add(family.name)
    return {
        "concepts": len(kb.concept_ids),
        "names": kb.num_names,
        "fingerprint": kb.fingerprint(),
        "id_families": sorted(families),
        "lowercase": bool(getattr(kb, "lowercase", True)),
    }


def info_from_training_log(log: Mapping[str, Any]) -> Dict[str, Any]:
    """Card info from a ``training_log.json`` dict (positive or preference stage)."""
    settings = dict(log.get("settings") or {})
    stage = "preference" if "trl_trainer" in log or "num_pairs" in log else "positive"
    if stage == "preference":
        stage = f"preference ({settings.get('loss', 'dpo')})"
    dev: Dict[str, Any] = {}
    curve = [d for d in log.get("dev") or [] if "eval_dev_acc1" in d]
    if curve:
        last = curve[-1]
        dev = {"acc@1": last.get("eval_dev_acc1"), "acc@5": last.get("eval_dev_acc5"), "step": last.get("step")}
    if log.get("best_metric") is not None:
        dev["best"] = log["best_metric"]
    if log.get("dev_acc1_start") is not None:
        dev["acc@1 before this stage"] = log["dev_acc1_start"]
    facts = {k: log[k] for k in ("global_step", "wall_time_s", "peak_rss_mb", "stopped_by_time_budget", "num_pairs") if k in log}
    return {
        "stage": stage,
        "base_model": log.get("model_dir") or settings.get("ref_model_dir"),
        "recipe": {**settings, **facts},
        "data": log.get("data"),
        "dev": dev or None,
        "kb": log.get("kb"),
    }


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else json.dumps(value)


def _front_matter(info: Mapping[str, Any], families: Iterable[str]) -> str:
    families = set(families)
    # "other" unless told: the weights inherit the KB's and corpus's terms (stated in the card)
    license_id = info.get("license") or "other"
    lines = ["---", "library_name: transformers", "pipeline_tag: text2text-generation", "language:", "- en",
             f"license: {license_id}"]
    if license_id == "other":
        lines.append("license_name: knowledge-base-and-corpus-terms")
    base = _public(info.get("base_model"))
    if isinstance(base, str) and "/" in base and not base.startswith("/"):
        lines.append(f"base_model: {_yaml_scalar(base)}")
    lines.append("tags:")
    lines.extend(f"- {tag}" for tag in (*TAGS, *sorted(families), *info.get("tags", ())))
    lines.append("---")
    return "\n".join(lines)


def _table(rows: Mapping[str, Any], head: str = "setting") -> List[str]:
    out = [f"| {head} | value |", "|---|---|"]
    for key, value in rows.items():
        if value is None or isinstance(value, (dict, list)) and not value:
            continue
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        out.append(f"| `{key}` | {shown.replace('|', chr(92) + '|')} |")
    return out


def render_model_card(info: Mapping[str, Any]) -> str:
    """The card text. ``info`` keys (all optional): ``name``, ``stage``, ``base_model``, ``kb`` (see
    :func:`kb_summary`), ``data``, ``recipe``, ``dev``, ``test``, ``license``, ``tags``, ``notes``."""
    info = _public(dict(info))
    kb = info.get("kb") or {}
    families = kb.get("id_families") or []
    name = info.get("name") or "spacy-angel entity linking model"
    parts = [_front_matter(info, families), "", f"# {name}", ""]
    parts.append(
        "A generative biomedical entity linker for spacy-angel (the `angel_linker` spaCy component): a seq2seq model "
        "that reads a mention in context and writes the name of a knowledge-base concept, constrained "
        "by a prefix trie to the names of its KB. Training follows ANGEL (Kim et al., Findings of ACL "
        "2025): positive-only training on TF-IDF-selected synonyms, then negative-aware preference training."
    )
    if info.get("stage"):
        parts += ["", f"Stage: **{info['stage']}**."]
    parts += ["", "## Usage", "", "```python", "import spacy", "", 'nlp = spacy.blank("en")',
              'nlp.add_pipe("entity_ruler").add_patterns([{"label": "DISEASE", "pattern": "breast cancer"}])',
              'nlp.add_pipe("angel_linker", config={"model": "path/to/this/model", "kb": "path/to/its/kb"})',
              'doc = nlp("Women with breast cancer were followed.")',
              "print([(e.text, e.kb_id_, e._.kb_name, e._.cui_score) for e in doc.ents])", "```"]
    parts += ["", "## Data", ""]
    if kb:
        parts.append(
            f"Knowledge base: {kb.get('concepts', '?')} concepts, {kb.get('names', '?')} names"
            + (f", ids from {', '.join(families)}" if families else "") + "."
        )
    data = info.get("data")
    if data:
        parts += ["", "Training data:", "", *_table(data if isinstance(data, dict) else {"data": data}, "count")]
    if not kb and not data:
        parts.append("Not recorded.")
    recipe = dict(info.get("recipe") or {})
    if info.get("base_model"):
        recipe = {"start checkpoint": info["base_model"], **recipe}
    if recipe:
        parts += ["", "## Training recipe", "", *_table(recipe)]
    for split in ("dev", "test"):
        figures = info.get(split)
        if figures:
            parts += ["", f"## Results ({split})", "", *_table(figures, "metric")]
    parts += ["", "## KB fingerprint", ""]
    if kb.get("fingerprint"):
        parts.append(
            f"`{kb['fingerprint']}` (sha256 of the KB's ordered names; `spacy-angel kb info KB` prints it). "
            "Link with this KB: the trie is checked against the fingerprint, and a model trained for "
            "one KB's names writes those names."
        )
    else:
        parts.append("Not recorded: link with the KB the model was trained with.")
    parts += ["", "## License and data terms", ""]
    terms = [DATA_TERMS[f] for f in families if f in DATA_TERMS]
    parts.append(
        "The spacy-angel code is MIT-licensed. The weights and the KB files are derived from the "
        "knowledge base and training corpus, whose terms apply to them:"
        if terms else
        "The spacy-angel code is MIT-licensed. Check the terms of the knowledge base and corpus the model "
        "was trained on: they apply to the weights and KB files too."
    )
    if terms:
        parts += [""] + [f"- {t}" for t in terms]
    if {"umls", "omim"} & set(families):
        parts += ["", "**Redistribution may be restricted** by the terms above: check them before publishing this model."]
    if info.get("notes"):
        parts += ["", str(info["notes"])]
    return "\n".join(parts) + "\n"


def write_model_card(model_dir: Union[str, Path], info: Mapping[str, Any]) -> Path:
    """Write ``model_dir/README.md`` atomically and return its path."""
    return atomic_write_text(Path(model_dir) / CARD_FILE, render_model_card(info))

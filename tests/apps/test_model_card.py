"""Model cards: Hugging Face front matter, data / recipe / results / KB fingerprint sections, data terms."""
from __future__ import annotations

from typer.testing import CliRunner

from spacy_angel.apps.cli import get_app
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.apps.model_card import (
    info_from_training_log,
    kb_summary,
    render_model_card,
    write_model_card,
)


def front_matter(card: str) -> dict:
    head = card.split("---\n")[1]
    out, key = {}, None
    for line in head.splitlines():
        if line.startswith("- "):
            out.setdefault(key, []).append(line[2:])
        else:
            key, _, value = line.partition(":")
            if value.strip():
                out[key] = value.strip()
    return out


def test_card_has_front_matter_sections_and_no_local_paths(tiny_kb, tmp_path):
    info = {
        "stage": "positive",
        "base_model": "/home/someone/models/model_init",
        "kb": kb_summary(tiny_kb),
        "data": {"mentions_used": 10, "examples": 40},
        "recipe": {"learning_rate": 7e-4, "kb_dir": "/home/someone/kb"},
        "dev": {"acc@1": 0.81, "acc@5": 0.9},
        "test": {"acc@1": 0.8},
    }
    path = write_model_card(tmp_path / "model", info)
    card = path.read_text(encoding="utf-8")
    assert path.name == "README.md"
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["license"] == "other"
    assert {"spacy-angel", "entity-linking", "biomedical", "mesh"} <= set(meta["tags"])
    for section in ("## Data", "## Training recipe", "## Results (dev)", "## Results (test)", "## KB fingerprint",
                    "## License and data terms"):
        assert section in card
    assert tiny_kb.fingerprint() in card and "| `acc@1` | 0.81 |" in card
    assert "/home/someone" not in card and "model_init" in card
    assert "CTD" in card and "MeSH" in card  # MeSH ids: the MEDIC / MeSH terms


def test_umls_and_omim_terms_are_stated():
    umls = KnowledgeBase()
    umls.add("C0006142", "breast cancer")
    umls.add("215600", "cystic fibrosis")
    card = render_model_card({"kb": kb_summary(umls)})
    assert "UMLS Metathesaurus License" in card and "omim.org/help/agreement" in card
    assert "Redistribution may be restricted" in card
    hpo = KnowledgeBase()
    hpo.add("HP:0000118", "phenotypic abnormality")
    card = render_model_card({"kb": kb_summary(hpo)})
    assert "hpo.jax.org/license" in card and "Redistribution" not in card


def test_info_from_training_logs():
    positive = {"settings": {"learning_rate": 1e-3, "kb_dir": "/x/kb"}, "dev": [{"step": 10, "eval_dev_acc1": 0.5, "eval_dev_acc5": 0.7}],
                "best_metric": 0.5, "global_step": 10, "data": {"examples": 5}, "model_dir": "/x/init",
                "kb": {"fingerprint": "abc", "concepts": 2, "names": 3, "id_families": ["hpo"]}}
    info = info_from_training_log(positive)
    assert info["stage"] == "positive" and info["dev"]["acc@1"] == 0.5 and info["kb"]["fingerprint"] == "abc"
    card = render_model_card(info)
    assert "`abc`" in card and "/x/" not in card
    dpo = {"settings": {"loss": "dpo"}, "trl_trainer": "DPOTrainer", "num_pairs": 7, "dev_acc1_start": 0.4}
    assert info_from_training_log(dpo)["stage"] == "preference (dpo)"


def test_init_model_writes_a_card(tmp_path):
    runner = CliRunner()
    (tmp_path / "kb.tsv").write_text("HP:0000118\tphenotypic abnormality\nHP:0001250\tseizure\n")
    assert runner.invoke(get_app(), ["kb", "build", str(tmp_path / "kb.tsv"), "--output", str(tmp_path / "kb")]).exit_code == 0
    result = runner.invoke(get_app(), ["init-model", str(tmp_path / "kb"), str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "untrained" in card and "hpo" in front_matter(card)["tags"]
    assert KnowledgeBase.from_disk(tmp_path / "kb").fingerprint() in card

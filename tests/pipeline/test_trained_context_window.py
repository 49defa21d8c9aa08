"""A model trained on mentions in context stores its window (``config.json``: ``angel_context_window``),
and the linker and the ``angel_linker`` component link with it unless told otherwise (issue 28).
Why: a seq2seq linker reads only the input format it was trained on; a user who loads a
context-trained model should not have to know its window."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_mentions_in_context

from spacy_angel.errors import LinkerError
from spacy_angel.linking.linker import AngelLinker
from spacy_angel.seq2seq.prompt import CONTEXT_WINDOW_FIELD
from spacy_angel.types import Mention
from training.stages.positive import train_positive

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def context_model(tiny_model_dir, tiny_kb, tmp_path_factory):
    """Six steps with 3 words of context a side: enough to write a trained model."""
    out = tmp_path_factory.mktemp("ctx") / "model"
    return train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), out, max_steps=6, batch_size=8,
                          learning_rate=1e-3, context_window=3, progress=False)


def test_training_writes_its_window_and_the_linker_reads_it(context_model, tiny_kb, tiny_model_dir):
    assert json.loads((context_model / "config.json").read_text())[CONTEXT_WINDOW_FIELD] == 3
    linker = AngelLinker.from_pretrained(context_model, tiny_kb, device="cpu", num_beams=2)
    assert linker.context_window == 3
    text = "one two three four breast cancer five six seven eight"
    source = linker.format_source(Mention("d", text, 19, 32))
    assert "two three four" in source and "five six seven" in source and "one" not in source.split()
    assert AngelLinker.from_pretrained(context_model, tiny_kb, device="cpu", context_window=0).context_window == 0
    # a model that does not say (init-model, published checkpoints) reads the mention alone
    assert CONTEXT_WINDOW_FIELD not in json.loads((tiny_model_dir / "config.json").read_text())
    assert AngelLinker.from_pretrained(tiny_model_dir, tiny_kb, device="cpu").context_window == 0


def test_the_component_defaults_to_the_model_window(context_model, tiny_kb_dir):
    import spacy

    import spacy_angel.pipeline.linker_component  # noqa: F401

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("angel_linker", config={"model": str(context_model), "kb": str(tiny_kb_dir), "device": "cpu"})
    assert pipe.cfg["context_window"] is None and pipe.linker.context_window == 3
    nlp2 = spacy.blank("en")
    pipe2 = nlp2.add_pipe("angel_linker", config={"model": str(context_model), "kb": str(tiny_kb_dir), "device": "cpu",
                                                   "context_window": 1})
    assert pipe2.linker.context_window == 1


def test_a_bad_window_field_is_refused_with_its_number(context_model, tiny_kb, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(context_model, bad)
    config = json.loads((bad / "config.json").read_text())
    config[CONTEXT_WINDOW_FIELD] = -2
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(LinkerError, match=r"\[E041\].*angel_context_window.*-2"):
        AngelLinker.from_pretrained(bad, tiny_kb, device="cpu")


def test_a_stage_started_from_a_context_model_keeps_its_window_unless_told(context_model, tiny_kb, tmp_path):
    """``--context-window`` left out: fine-tuning reads (and records) the start model's window."""
    common = dict(max_steps=2, batch_size=8, learning_rate=1e-4, progress=False)
    kept = train_positive(context_model, tiny_kb, tiny_mentions_in_context(), tmp_path / "kept", **common)
    assert json.loads((kept / "config.json").read_text())[CONTEXT_WINDOW_FIELD] == 3
    told = train_positive(context_model, tiny_kb, tiny_mentions_in_context(), tmp_path / "told", context_window=0, **common)
    assert json.loads((told / "config.json").read_text())[CONTEXT_WINDOW_FIELD] == 0

"""Token-level training examples that match the linker's decoding format exactly.

The decoder sees ``[start] + " mention is"`` (the prompt) and must continue with the KB name and
end-of-name, i.e. the same token sequence the trie holds. Training on anything else would teach
the model a format the constrained decoder never asks for, so every training stage (positive,
mining, preference) builds its inputs here from :meth:`AngelLinker.encode`.
"""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

from spacy_angel.linking.linker import AngelLinker
from spacy_angel.seq2seq.prompt import tokenize_name
from spacy_angel.types import Mention

IGNORE_INDEX = -100


def name_target(linker: AngelLinker, name: str) -> List[int]:
    """Token ids the decoder must produce after the prompt for ``name`` (name + end-of-name)."""
    return tokenize_name(linker.tokenizer, linker.normalize_text(name)) + [linker.tokenizer.eos_token_id]


def encode_text_inputs(linker: AngelLinker, source: str, prompt: str) -> Tuple[List[int], List[int]]:
    """(encoder ids, decoder prompt ids) for pre-formatted text, e.g. KB pre-training templates.

    The linker's own format (:meth:`spacy_angel.seq2seq.prompt.PromptFormat.encode_text`): ``<s> source
    </s>`` truncated to the model's input limit, and ``[decoder start] + " prompt"``.
    """
    return linker.prompt_format.encode_text(source, prompt)


def seq2seq_example(
    linker: AngelLinker, mention: Union[Mention, Tuple[str, str]], name: str
) -> Dict[str, List[int]]:
    """``input_ids`` / ``decoder_input_ids`` / ``labels`` for teacher forcing one (mention, name).

    ``mention`` is a :class:`Mention` or a pre-formatted ``(source, prompt)`` text pair.
    ``labels`` is aligned with ``decoder_input_ids`` (label j = the token after position j); the
    prompt is masked with -100 so only the name and end-of-name are learned.
    """
    if isinstance(mention, Mention):
        source, prompt = linker.encode(mention)
    else:
        source, prompt = encode_text_inputs(linker, *mention)
    target = name_target(linker, name)
    decoder_input_ids = list(prompt) + target[:-1]
    labels = [IGNORE_INDEX] * (len(prompt) - 1) + target
    return {"input_ids": list(source), "decoder_input_ids": decoder_input_ids, "labels": labels}

"""The model's input format: encoder input ``c- START m END c+`` and decoder prompt ``m is``.

Why one room: a seq2seq linker only works on the exact format it was trained on. The published
GenBioEL / ANGEL checkpoints read, and every training stage here writes,

* encoder: ``<s> left-context START mention END right-context </s>``: whitespace collapsed,
  lowercased (markers keep their case: plain words ``START`` / ``END``), context cut to
  ``context_window`` words a side, every piece tokenized with a leading space;
* decoder: the decoder start token (``</s>`` for BART) then `` mention is``, after which the
  trie allows only `` kb-name </s>``.

Inference (:class:`spacy_angel.linking.linker.AngelLinker`), training (``training/``) and the benches all
build their inputs here, so a change to the format is one change in one place.

The window a model was trained with is stored in its ``config.json`` (``angel_context_window``,
written by every training stage: :func:`settle_context_window`), and the linker reads it when no
window is given (:func:`trained_context_window`), so a model trained on mentions in context is linked
with its own window. Models without the field (every recipe here but context training, and the
published checkpoints) read 0: the mention alone. On NCBI-disease dev raw mentions a window the model
was not trained with cost accuracy and time (``bench/dev_tradeoffs.py``, docs/performance.md).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from spacy_angel.errors import Errors, LinkerError
from spacy_angel.kb.normalize import collapse_whitespace
from spacy_angel.types import Mention

DEFAULT_START_MARKER = "START"


DEFAULT_END_MARKER = "END"


PROMPT_SUFFIX = "is"


#: ``config.json`` field holding the context window (words a side) the model was trained with.
CONTEXT_WINDOW_FIELD = "angel_context_window"


def settle_context_window(model, requested: Optional[int]) -> int:
    """The window a training run on ``model`` uses: ``requested``, or when None the model's own (so a
    fine-tuning stage keeps the window of the model it starts from); stored in the model's config,
    which is saved with it."""
    window = trained_context_window(model) if requested is None else int(requested)
    setattr(model.config, CONTEXT_WINDOW_FIELD, window)
    return window


def trained_context_window(model) -> int:
    """The window ``model`` was trained with (its config's field), 0 when it does not say."""
    value = getattr(model.config, CONTEXT_WINDOW_FIELD, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LinkerError(Errors.E041.format(field=CONTEXT_WINDOW_FIELD, value=value))
    return value


TokenIds = Tuple[int, ...]


def tokenize_name(tokenizer, name: str) -> List[int]:
    """Token ids of a piece of text as the model sees it: leading space, no special tokens.

    KB names (the trie), mentions, context and prompts all go through this one rule, so a name
    in the prompt and the same name in the trie are the same tokens.
    """
    return tokenizer(" " + name, add_special_tokens=False)["input_ids"]


def tokenize_names(tokenizer, names: Sequence[str]) -> List[List[int]]:
    """:func:`tokenize_name` for many names in one (fast, batched) tokenizer call."""
    return tokenizer([" " + n for n in names], add_special_tokens=False)["input_ids"]


#: Collapse whitespace (and lowercase): the form the model reads. KB names get NFKC on top
#: (:func:`spacy_angel.kb.normalize.normalize_name`); mention text keeps what the user wrote.
normalize_text = collapse_whitespace


def split_context(text: str, start: int, end: int, window_words: int) -> Tuple[str, str, str]:
    """(left context, mention, right context) with at most ``window_words`` words of context a side.

    Words are whitespace-separated and re-joined with single spaces; the mention is returned as
    written. A window of 0 (or less) gives no context.
    """
    surface = text[start:end]
    if window_words <= 0:
        return "", surface, ""
    left = text[:start].split()[-window_words:]
    right = text[end:].split()[:window_words]
    return " ".join(left), surface, " ".join(right)


def prompt_for(surface: str) -> str:
    """The decoder prompt text for an (already normalised) mention: ``"m is"``."""
    return f"{surface} {PROMPT_SUFFIX}"


def mention_of_prompt(prompt: str) -> str:
    """The mention back out of a prompt text (inverse of :func:`prompt_for`)."""
    suffix = f" {PROMPT_SUFFIX}"
    return prompt[: -len(suffix)] if prompt.endswith(suffix) else prompt


class PromptFormat:
    """Mentions -> (encoder ids, decoder prompt ids), truncated to the model's limits.

    ``decoder_start_id`` is the model's ``decoder_start_token_id`` (the tokenizer's end of
    sequence when the model has none); ``max_input_length`` counts the special tokens too.
    """

    def __init__(
        self,
        tokenizer,
        decoder_start_id: Optional[int] = None,
        *,
        context_window: int = 0,
        lowercase: bool = True,
        start_marker: str = DEFAULT_START_MARKER,
        end_marker: str = DEFAULT_END_MARKER,
        max_input_length: int = 1024,
        max_prompt_length: int = 64,
    ) -> None:
        self.tokenizer = tokenizer
        self.decoder_start_id = tokenizer.eos_token_id if decoder_start_id is None else decoder_start_id
        self.context_window = context_window
        self.lowercase = lowercase
        self.start_marker = start_marker
        self.end_marker = end_marker
        self.max_input_length = max_input_length
        self.max_prompt_length = max_prompt_length
        self._start_ids = tokenize_name(tokenizer, start_marker) if start_marker else []
        self._end_ids = tokenize_name(tokenizer, end_marker) if end_marker else []
        self._suffix_ids = tokenize_name(tokenizer, PROMPT_SUFFIX)

    @classmethod
    def for_model(cls, model, tokenizer, max_input_length: Optional[int] = None, **kwargs) -> "PromptFormat":
        """The format for ``model``: its decoder start token and position limit (``max_input_length`` caps it);
        ``context_window=None`` (or absent) is the window the model was trained with."""
        model_max = getattr(model.config, "max_position_embeddings", 1024) or 1024
        if kwargs.get("context_window") is None:
            kwargs["context_window"] = trained_context_window(model)
        return cls(
            tokenizer,
            model.config.decoder_start_token_id,
            max_input_length=min(max_input_length or model_max, model_max),
            **kwargs,
        )

    # ------------------------------------------------------------------ text
    def normalize(self, text: str) -> str:
        return normalize_text(text, self.lowercase)

    def pieces(self, mention: Mention) -> Tuple[str, str, str]:
        """Normalised (left context, mention, right context); bad offsets fail with the doc id."""
        if not (0 <= mention.start <= mention.end <= len(mention.text)):
            raise LinkerError(
                Errors.E040.format(start=mention.start, end=mention.end, length=len(mention.text), doc_id=mention.doc_id)
            )
        left, surface, right = split_context(mention.text, mention.start, mention.end, self.context_window)
        return self.normalize(left), self.normalize(surface), self.normalize(right)

    def source_text(self, mention: Mention) -> str:
        """The encoder input as text (for inspection; :meth:`encode` builds the same ids)."""
        left, surface, right = self.pieces(mention)
        return " ".join(p for p in (left, self.start_marker, surface, self.end_marker, right) if p)

    def prompt_text(self, mention: Mention) -> str:
        return prompt_for(self.pieces(mention)[1])

    def tokenize_name(self, name: str) -> List[int]:
        return tokenize_name(self.tokenizer, name)

    # ------------------------------------------------------------------ ids
    def encode(self, mention: Mention) -> Tuple[TokenIds, TokenIds]:
        """(encoder ids, decoder prompt ids) for a mention, truncated to the model's limits.

        The mention is kept whole where possible; context is cut from the far ends first, and
        evenly from both sides unless one side is short.
        """
        left, surface, right = self.pieces(mention)
        tok = self.tokenizer
        mention_ids = tokenize_name(tok, surface) if surface else []
        budget = self.max_input_length - 2 - len(self._start_ids) - len(self._end_ids)
        mention_ids = mention_ids[: max(budget, 1)]
        remaining = max(budget - len(mention_ids), 0)
        left_ids = tokenize_name(tok, left) if left else []
        right_ids = tokenize_name(tok, right) if right else []
        keep_left = min(len(left_ids), remaining // 2 + max(remaining // 2 - len(right_ids), 0))
        keep_right = min(len(right_ids), remaining - keep_left)
        left_ids = left_ids[len(left_ids) - keep_left :]
        right_ids = right_ids[:keep_right]
        source = self._bos() + left_ids + self._start_ids + mention_ids + self._end_ids + right_ids + [tok.eos_token_id]
        prompt = [self.decoder_start_id] + mention_ids[: self.max_prompt_length] + self._suffix_ids
        return tuple(source), tuple(prompt)

    def encode_text(self, source: str, prompt: str) -> Tuple[List[int], List[int]]:
        """(encoder ids, decoder prompt ids) for pre-formatted text, e.g. KB pre-training templates.

        ``<s> source </s>`` truncated to the input limit (markers keep their case, other words
        are normalised), and ``[decoder start] + " prompt"`` truncated to the prompt limit.
        """
        tok = self.tokenizer
        markers = {self.start_marker, self.end_marker}
        words = [w if w in markers else self.normalize(w) for w in source.split()]
        body = tokenize_name(tok, " ".join(words))[: max(self.max_input_length - 2, 1)]
        prompt_ids = tokenize_name(tok, self.normalize(prompt))[: self.max_prompt_length]
        return self._bos() + body + [tok.eos_token_id], [self.decoder_start_id] + prompt_ids

    def _bos(self) -> List[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

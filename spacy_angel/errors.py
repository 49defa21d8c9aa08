"""Numbered error messages and the exception classes of the runtime.

Why numbered: a code such as ``[E021]`` survives translation, rewording and log truncation, so
a user's report or a search finds the cause even when the text around it changed. The style
follows spaCy's ``spacy/errors.py``: messages are class attributes with ``str.format`` fields,
and reading one through the class prefixes its code::

    raise LinkerError(Errors.E040.format(start=3, end=50, length=5, doc_id="doc7"))

Codes are grouped by room, in blocks that leave room to grow:

* ``E001``-``E019``: loading and saving models (:mod:`spacy_angel.seq2seq.loading`)
* ``E020``-``E039``: tries and their fit to a KB / tokenizer (:mod:`spacy_angel.trie.kb_trie`,
  :mod:`spacy_angel.trie.token_trie`)
* ``E040``-``E049``: the input format (:mod:`spacy_angel.seq2seq.prompt`)
* ``E050``-``E059``: constrained decoding and scoring (:mod:`spacy_angel.decoding.decoder`)
* ``E060``-``E099``: the linker (:mod:`spacy_angel.linking.linker`)
* ``E100``-``E109``: the spaCy component (:mod:`spacy_angel.pipeline.linker_component`)
* ``E110``-``E139``: input files and outputs at the edges: JSONL and report files, fusion.json,
  output directories, command-line ranges (the rows of ``tests/test_bad_inputs.py``)
* ``E140`` and up: free; a new room takes the next free block.

A message keeps its code for good: reword it freely, but never reuse a retired number.
"""
from __future__ import annotations

from typing import Optional

from spacy_angel.types import PathLike


class ErrorsWithCodes(type):
    """Prefix every message read through the class with its code: ``Errors.E001 -> "[E001] ..."``."""

    def __getattribute__(self, code: str) -> str:
        msg = super().__getattribute__(code)
        if code.startswith("__"):  # python internals, not messages
            return msg
        return f"[{code}] {msg}"


class Errors(metaclass=ErrorsWithCodes):
    # ---- model + tokenizer loading (hf.py)
    E001 = "model path {path} is not a directory"
    E002 = "model directory {path} has no config.json"
    E003 = "model directory {path} has no tokenizer (tokenizer.json or vocab.json + merges.txt)"
    E004 = "model directory {path} does not exist (no config.json to load)"
    E005 = "could not load a tokenizer from {model}: {err}"
    E006 = "could not load a seq2seq model from {model}: {err}"
    E007 = "unknown dtype {dtype!r}: use float32, float16, bfloat16 or int8"
    E009 = (
        "cannot save a {dtype} model that was not loaded from a local directory: load the float32 model "
        "from a directory (or save before quantising)"
    )
    E008 = "dtype {dtype!r} (dynamic int8 quantisation) runs on the CPU only, not on {device}: use device 'cpu'"

    # ---- tries (name_trie.py, trie.py)
    E020 = "the KB has no names: cannot build a trie"
    E021 = (
        "the trie was built with a different tokenizer than the model's: it was built for {trie_tokenizer} "
        "(tokenizer fingerprint {trie_fingerprint}), the model's tokenizer is {tokenizer} (fingerprint "
        "{fingerprint}). Its token ids would spell other names. Rebuild it for this model "
        "(`spacy-angel kb build ...` with this model), or delete {where} so that it is rebuilt from the KB on load"
    )
    E022 = (
        "the trie was built from a different KB (KB fingerprint {trie_fingerprint}) than the one given "
        "({fingerprint}): its names would map to the wrong concepts. Rebuild it from this KB "
        "(`spacy-angel kb build ...`), or delete {where} so that it is rebuilt on load"
    )
    E023 = (
        "the trie's vocabulary (size {trie_vocab}, end-of-name id {trie_eos}) does not match the model's "
        "tokenizer (size {vocab}, end-of-sequence id {eos})"
    )
    E024 = "the trie uses token ids up to {trie_vocab}, the model's vocabulary has {vocab}"
    E025 = "cannot build a trie from an empty list of names"
    E026 = "token ids must be integers, got dtype {dtype}"
    E027 = "token ids must lie in [0, {vocab_size}); got {low}..{high}"
    E028 = "lengths add up to {total} tokens, but {given} were given"
    E029 = "name_ids and sequences differ in length"
    E030 = "no trie at {path}: {file} is missing"
    E031 = "{path}: not valid JSON ({err})"
    E032 = "{path}: unsupported trie format version {version!r}"
    E033 = "trie at {path} is incomplete: {file} is missing"
    E034 = "trie at {path} is corrupt: {num_nodes} nodes, trie.json says {expected}"

    # ---- input format (prompt.py)
    E040 = "mention offsets {start}-{end} lie outside its text of length {length} (doc {doc_id!r})"

    # ---- decoding (decoding.py)
    E050 = "the tokenizer has no end-of-sequence token"
    E051 = "share_beams=True needs a BART-style decoder with sdpa or eager attention"
    E052 = (
        "the encoder output has shape {shape}, but the padded batch needs ({rows}, {length}, hidden): "
        "pass the output of encode() for the same batch"
    )
    E053 = "got {lists} name lists for {inputs} inputs"
    E054 = "num_beams must be at least 1"
    E055 = "ConstrainedDecoder was made without name_tokens=: it cannot score given names"

    # ---- the linker (linker.py)
    E060 = "num_beams and batch_size must be at least 1"
    E061 = (
        "rerank(candidates='tfidf') needs index=<a fitted TF-IDF name index>, "
        "e.g. spacy_angel.retrieval.tfidf.load_or_build_index(kb, kb_dir)"
    )
    E062 = "unknown candidate source {source!r}: use 'trie', 'tfidf' or lists of KB names"
    E063 = "got {lists} candidate lists for {mentions} mentions"
    E064 = "candidates for mention {idx} must be a list of names, not the string {names!r}"
    E065 = (
        "candidate {name!r} for mention {idx} ({surface!r}, doc {doc_id!r}) is not a name in the KB: "
        "only KB names can be scored"
    )
    E066 = "num_candidates must be at least 1, got {value}"
    E067 = "unknown linking mode {mode!r}: use one of {modes}"

    # ---- the spaCy component (component.py), its display and packaging helpers
    E100 = "angel_linker: config setting '{field}' must be {expected}, got {value!r}"
    E101 = "angel_linker: config setting 'top_k' ({top_k}) cannot exceed 'num_beams' ({num_beams})"
    E102 = (
        "angel_linker has no model: set config 'model' to a model directory or hub id "
        "(e.g. nlp.add_pipe('angel_linker', config={{'model': 'path/to/model', 'kb': 'path/to/kb'}})), "
        "or call nlp.get_pipe('{name}').initialize(model=..., kb=...)"
    )
    E103 = (
        "angel_linker has no KB: set config 'kb' to a KB directory or a KB file, "
        "or call nlp.get_pipe('{name}').initialize(model=..., kb=...)"
    )
    E104 = "angel_linker: KB path {path} does not exist"
    E105 = "angel_linker data at {path} is incomplete (need model/ and kb/)"

    # ---- input files and outputs at the edges (fileio.py, fusion.py, the CLIs, training outputs)
    E110 = (
        "{path} cannot be used ({err}): fix it, delete it to link with the default fusion weights, "
        "or fit it again with `spacy-angel train fuse`"
    )
    E111 = "invalid UTF-8 byte 0x{byte:02x} at byte offset {offset}; convert the file to UTF-8"
    E112 = (
        "cannot fit fusion weights on {n} dev mention(s): at least {minimum} are needed (one per "
        "cross-validation fold); add dev mentions, or keep the default weights"
    )
    E113 = (
        "output directory {path} is not empty and holds no earlier output of this command (it holds "
        "{shown}): the result replaces the whole directory, so choose a new or empty one"
    )
    E114 = "{path} exists and is not a directory ({option} names a directory)"
    E115 = "{option} must be at least 1, got {value}"
    E116 = "{path} is not a report written by `spacy-angel train evaluate` ({err})"
    E117 = "{path} is a directory ({option} names a file)"
    E118 = "{path} is plain text: name an NER pipeline with --ner (or give JSONL with spans)"

    # ---- runtime rooms moved to numbered errors in the sub-package layout (E140-E299)
    # (RUNTIME-ANCHOR: new runtime codes go above this line)

    # ---- training (E300-E399)
    # (TRAINING-ANCHOR: new training codes go above this line)


class Warnings(metaclass=ErrorsWithCodes):
    """Numbered warnings (logged or ``warnings.warn``), read as ``Warnings.W001`` -> ``"[W001] ..."``."""

    # (WARNINGS-ANCHOR: new warning codes go above this line)


class LinkerError(ValueError):
    """The model, tokenizer, KB or trie cannot be used together, or an input cannot be linked."""


class TrieError(ValueError):
    """A trie file is missing, corrupt, or does not belong to the model/KB it is used with."""


class TrainingDataError(ValueError):
    """Training input that cannot be used; the message names the file/line or the reason."""


class PreferenceTrainingError(ValueError):
    """The pairs, the loss option or the models cannot be used for preference training."""


class CorpusFormatError(ValueError):
    """A corpus line that cannot be parsed; the message names the file and 1-based line."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


class KBFormatError(ValueError):
    """A KB source or stored KB is malformed; the message names the file, 1-based line and field."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None,
                 field: Optional[str] = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = "" if self.path is None else self.path + (f":{line}" if line is not None else "")
        if field is not None:
            message = f"field {field!r}: {message}"
        super().__init__(f"{where}: {message}" if where else message)


class NameIndexError(ValueError):
    """A saved index that cannot be used for this KB (unreadable, another KB, other settings)."""


class FusionError(LinkerError):
    """A fusion.json that cannot be used (missing or unknown features, non-finite weights).

    A :class:`LinkerError` (so a ``ValueError``): whoever loads a linker already reports those."""


class ScaleError(ValueError):
    """The corpus, the output directory or the Ray settings cannot be used."""


__all__ = ["CorpusFormatError", "Errors", "ErrorsWithCodes", "Warnings", "FusionError", "KBFormatError", "LinkerError", "NameIndexError",
           "PreferenceTrainingError", "ScaleError", "TrainingDataError", "TrieError"]

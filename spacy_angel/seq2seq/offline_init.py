"""Fresh BART-style models and byte-level BPE tokenizers fitted on KB names, fully offline.

Tests, demos and CPU experiments cannot reach the Hugging Face hub, so they start from a model
made here: ``init_model(kb, out_dir, size="tiny")`` writes a directory that
``AutoModelForSeq2SeqLM`` / ``AutoTokenizer.from_pretrained`` load like any hub checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from spacy_angel.errors import Errors
from spacy_angel.fileio import atomic_directory, atomic_write_text, check_output_directory
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.loading import save_model_files
from spacy_angel.seq2seq.prompt import DEFAULT_END_MARKER, DEFAULT_START_MARKER, PROMPT_SUFFIX

SIZES = {
    # d_model, layers (enc = dec), heads, ffn, vocab
    "tiny": dict(d_model=64, layers=1, heads=2, ffn=128, vocab=2000),
    "small": dict(d_model=256, layers=3, heads=4, ffn=1024, vocab=8000),
    "base": dict(d_model=512, layers=6, heads=8, ffn=2048, vocab=16000),
    # BART-large's shape (the published ANGEL checkpoints): for speed and memory figures on this machine
    # only (random weights); its output layer is padded to BART's 50,265 rows whatever the KB's vocabulary
    "large": dict(d_model=1024, layers=12, heads=16, ffn=4096, vocab=50265),
}


SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids 0..4


def _training_text(kb: KnowledgeBase, corpus: Iterable[str], lowercase: bool) -> Iterator[str]:
    # Every piece the linker encodes starts with a space (``tokenize_name``), so the tokenizer
    # is fitted on space-prefixed text: the first word of a name then gets its "Ġword" token.
    marker_line = f" {DEFAULT_START_MARKER} {DEFAULT_END_MARKER} {PROMPT_SUFFIX}"
    for _ in range(1000):  # make sure the markers and "is" become single tokens
        yield marker_line
    for name in kb.names:
        yield " " + name
    for text in corpus:
        yield " " + (text.lower() if lowercase else text)


def train_tokenizer(kb: KnowledgeBase, vocab_size: int, corpus: Iterable[str] = (), lowercase: bool = True):
    """A byte-level BPE tokenizer (like BART's) fitted on the KB names and optional corpus text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        _training_text(kb, corpus, lowercase), vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS
    )
    from tokenizers.processors import RobertaProcessing

    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=512,
    )


def init_model(
    kb: KnowledgeBase,
    output_dir: Union[str, Path],
    size: str = "tiny",
    corpus: Sequence[str] = (),
    seed: int = 0,
    vocab_size: Optional[int] = None,
    max_positions: int = 512,
    dims: Optional[Mapping[str, int]] = None,
    card: Optional[str] = None,
) -> Path:
    """Create an untrained BART model + tokenizer fitted on ``kb`` in ``output_dir`` (atomic write).

    ``dims`` (``d_model``, ``layers``, ``heads``, ``ffn``, ``vocab``, as in :data:`SIZES`) gives the
    dimensions explicitly instead of a named ``size``, for callers with their own architecture.
    ``card``: the text of a model card, written as README.md into the temp folder before its rename,
    so that a kill leaves the previous folder or the new one with its card, never one without.
    """
    import torch
    from transformers import BartConfig, BartForConditionalGeneration


    if dims is None and size not in SIZES:
        raise ValueError(Errors.E260.format(size=size, sizes=", ".join(SIZES)))
    if dims is not None and set(dims) != set(SIZES["tiny"]):
        raise ValueError(Errors.E261.format(keys=", ".join(SIZES["tiny"]), given=", ".join(dims)))
    if kb.num_names == 0:
        raise ValueError(Errors.E262)
    check_output_directory(output_dir, ("config.json",), option="OUTPUT_DIR")  # it is replaced as a whole
    spec = dict(dims) if dims is not None else SIZES[size]
    tokenizer = train_tokenizer(kb, vocab_size or spec["vocab"], corpus, lowercase=kb.lowercase)
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=max(len(tokenizer), spec["vocab"]) if size == "large" and dims is None else len(tokenizer),
        d_model=spec["d_model"],
        encoder_layers=spec["layers"],
        decoder_layers=spec["layers"],
        encoder_attention_heads=spec["heads"],
        decoder_attention_heads=spec["heads"],
        encoder_ffn_dim=spec["ffn"],
        decoder_ffn_dim=spec["ffn"],
        max_position_embeddings=max_positions,
        dropout=0.1,
        attention_dropout=0.1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        scale_embedding=True,
    )
    model = BartForConditionalGeneration(config)
    with atomic_directory(output_dir) as tmp:
        save_model_files(model, tokenizer, tmp)
        if card is not None:
            atomic_write_text(tmp / "README.md", card)
    return Path(output_dir)

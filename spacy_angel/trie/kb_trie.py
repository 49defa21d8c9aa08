"""KB names x tokenizer -> :class:`~spacy_angel.trie.token_trie.TokenTrie`, and whether a saved trie still fits.

Why a room: a trie is only valid for the KB whose names it holds *and* the tokenizer that
spelled them. A trie from another tokenizer decodes to token ids that spell other names (or
none), and one from another KB maps names to the wrong concepts, silently in both cases. So
every trie carries both fingerprints in its ``meta``, and this module builds tries, checks them
(:func:`check_trie`, which says what to rebuild) and loads-or-rebuilds the one a KB or pipeline
directory owns (:func:`load_or_build_trie`).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np

from spacy_angel.errors import Errors, LinkerError, TrieError, Warnings
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.seq2seq.prompt import tokenize_names
from spacy_angel.trie.token_trie import TokenTrie

logger = logging.getLogger(__name__)


PathLike = Union[str, Path]


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the vocabulary (id and token): equal fingerprints spell every name the same way."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{idx}\t{token}\n".encode("utf8"))
    return digest.hexdigest()


def trie_meta(kb: KnowledgeBase, tokenizer) -> dict:
    """What a trie built now for ``kb`` and ``tokenizer`` records about them."""
    return {
        "kb_fingerprint": kb.fingerprint(),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "tokenizer_name": getattr(tokenizer, "name_or_path", "") or "",
    }


def build_trie(kb: KnowledgeBase, tokenizer, batch_size: int = 50_000, progress: bool = False) -> TokenTrie:
    """Tokenize every KB name (in chunks, to keep memory flat) and build the token trie."""
    chunks: List[np.ndarray] = []
    lengths: List[np.ndarray] = []
    names = kb.names
    token_dtype = np.int32 if len(tokenizer) < 2**31 else np.int64
    iterator: Iterable[int] = range(0, len(names), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="trie", unit="chunk")
    for lo in iterator:
        ids = tokenize_names(tokenizer, names[lo : lo + batch_size])
        lengths.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
        chunks.append(np.fromiter((t for x in ids for t in x), dtype=token_dtype))
    if not chunks:
        raise LinkerError(Errors.E020)
    return TokenTrie.build_flat(
        np.concatenate(chunks),
        np.concatenate(lengths),
        eos_token_id=tokenizer.eos_token_id,
        vocab_size=len(tokenizer),
        meta=trie_meta(kb, tokenizer),
    )


def _short(fingerprint: Optional[str]) -> str:
    return fingerprint[:12] if fingerprint else "unknown"


def _tokenizer_mismatch(trie: TokenTrie, tokenizer, where: Optional[PathLike]) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    return Errors.E021.format(
        trie_tokenizer=repr(trie.meta.get("tokenizer_name")) if trie.meta.get("tokenizer_name") else "an unnamed tokenizer",
        trie_fingerprint=_short(trie.meta.get("tokenizer_fingerprint")),
        tokenizer=repr(name) if name else "unnamed",
        fingerprint=_short(tokenizer_fingerprint(tokenizer)),
        where=f"the trie at {where}" if where is not None else "the saved trie",
    )


def check_trie(trie: TokenTrie, kb: KnowledgeBase, tokenizer, where: Optional[PathLike] = None) -> None:
    """Refuse a trie that belongs to another tokenizer or KB (names would map to wrong concepts).

    A trie without fingerprints (built by hand) is taken on trust; ``where`` names the trie's
    directory in the message.
    """
    built_for = trie.meta.get("tokenizer_fingerprint")
    if built_for is not None and built_for != tokenizer_fingerprint(tokenizer):
        raise LinkerError(_tokenizer_mismatch(trie, tokenizer, where))
    kb_fp = trie.meta.get("kb_fingerprint")
    if kb_fp is not None and kb_fp != kb.fingerprint():
        raise LinkerError(
            Errors.E022.format(
                trie_fingerprint=_short(kb_fp),
                fingerprint=_short(kb.fingerprint()),
                where=f"the trie at {where}" if where is not None else "the saved trie",
            )
        )
    if trie.vocab_size > len(tokenizer) or trie.eos_token_id != tokenizer.eos_token_id:
        raise LinkerError(
            Errors.E023.format(
                trie_vocab=trie.vocab_size, trie_eos=trie.eos_token_id, vocab=len(tokenizer), eos=tokenizer.eos_token_id
            )
        )


def load_or_build_trie(kb: KnowledgeBase, tokenizer, path: Optional[PathLike] = None) -> TokenTrie:
    """Load the trie saved at ``path`` if it matches this KB and tokenizer; otherwise rebuild (and save).

    The directory owns its trie, so a stale one is replaced rather than refused. A KB change is
    routine (info); a trie spelled by another tokenizer means the directory was built for
    another model, which is logged as a warning with both fingerprints.
    """
    if path is not None and Path(path).exists():
        try:
            trie = TokenTrie.from_disk(path)
        except TrieError as err:
            logger.warning(Warnings.W002.format(path=path, err=err))
        else:
            if trie.meta.get("tokenizer_fingerprint") != tokenizer_fingerprint(tokenizer):
                logger.warning(Warnings.W003.format(mismatch=_tokenizer_mismatch(trie, tokenizer, path)))
            elif trie.meta.get("kb_fingerprint") != kb.fingerprint():
                logger.info("trie at %s is stale (the KB changed): rebuilding", path)
            else:
                return trie
    trie = build_trie(kb, tokenizer)
    if path is not None:
        trie.to_disk(path)
    return trie

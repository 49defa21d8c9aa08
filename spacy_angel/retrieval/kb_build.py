"""A KB directory from source files: the KB's arrays plus its retrieval index (``kb build``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from spacy_angel.fileio import PathLike
from spacy_angel.kb.readers import load_files
from spacy_angel.kb.store import KnowledgeBase, check_kb_output, kb_directory


def build_kb(paths: Union[PathLike, Sequence[PathLike]], output: PathLike, format: str = "auto",
             lowercase: bool = True, *, overwrite: bool = False, index: bool = False, ann: bool = False,
             cores: Optional[int] = None, **options: Any) -> KnowledgeBase:
    """Source files -> KB directory (``kb build``), plus the TF-IDF name index if ``index`` (or ``ann``) and
    its ANN graph if ``ann`` (:mod:`spacy_angel.retrieval.ann_search`). ``output`` is checked before the
    (possibly long) load, then written atomically (see ``kb.check_kb_output``). ``cores``: the fit's
    processes and the graph's threads (None: every core; the files are the same either way, but for the
    graph, which differs between multi-threaded builds)."""
    check_kb_output(output, overwrite)
    kb = load_files(paths, format=format, lowercase=lowercase, **options)
    with kb_directory(output, overwrite=overwrite) as tmp:
        kb.write_files(tmp)
        if index or ann:
            from spacy_angel.retrieval.tfidf import NameIndex

            # the index is fitted over the KB just written, memory-mapped: the in-memory KB (about 400
            # bytes a name) is let go first, so it does not add to the fit's peak
            kb = KnowledgeBase.from_disk(tmp)
            NameIndex(kb).fit(cores=cores).to_disk(tmp)
            if ann:  # built over the saved, mapped matrix: the fit's in-memory copy is gone by then
                NameIndex.from_disk(tmp, kb).build_ann(threads=cores or 0, progress=True).save_ann(tmp)
    return kb

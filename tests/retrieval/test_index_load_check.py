"""Loading a saved TF-IDF index checks every column index (SciPy's products do not), and the pages that
check reads must not stay in the loaded process's RSS (at 6M names they were 1.5 GB of it)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import kb_from
from smaps import mapped_pages_kb
from spacy_angel.errors import NameIndexError
from spacy_angel.mapped_arrays import read_arrays, write_arrays
from spacy_angel.retrieval import index_files
from spacy_angel.retrieval.index_files import INDEX_ARRAYS
from spacy_angel.retrieval.tfidf import NameIndex


FAULTS = [("a saved index whose column indices point past its vocabulary (a damaged file)",
           "NameIndex.from_disk / the linker's retriever",
           "`[E216]` naming the folder with a `kb build --index` hint; the linker refits and saves the index",
           "retrieval/test_index_load_check.py::test_a_column_index_out_of_range_is_refused_naming_the_folder")]


def make_kb(n: int = 30_000):
    return kb_from({f"C{i}": [f"name {i} of concept {i * 7919 % 100003} x{i * 31 % 977}"] for i in range(n)})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    kb = make_kb()
    folder = tmp_path_factory.mktemp("index")
    NameIndex(kb).fit().to_disk(folder)
    return kb, folder


def test_a_column_index_out_of_range_is_refused_naming_the_folder(saved, tmp_path) -> None:
    kb, folder = saved
    arrays, meta = read_arrays(folder / INDEX_ARRAYS, mmap=False)
    for name in folder.iterdir():
        (tmp_path / name.name).write_bytes(name.read_bytes())
    indices = np.array(arrays["indices"])
    indices[len(indices) // 2] = len(arrays["idf"]) + 5  # one index past the vocabulary
    write_arrays(tmp_path / INDEX_ARRAYS, {**arrays, "indices": indices}, meta)
    with pytest.raises(NameIndexError, match="inconsistent") as err:
        NameIndex.from_disk(tmp_path, kb)
    assert str(tmp_path) in str(err.value)
    assert NameIndex.from_disk(folder, kb).nearest_names(["name 12 of concept"], 1)  # the intact copy loads


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("release", [True, False])
def test_the_check_leaves_no_index_pages_resident(saved, monkeypatch: pytest.MonkeyPatch, release: bool) -> None:
    kb, folder = saved
    if not release:  # the control: without the release the check's pages stay, so the assertion below can fail
        monkeypatch.setattr(index_files, "release_pages", lambda *arrays: 0)
    index = NameIndex.from_disk(folder, kb)
    indices_kb = (index.matrix.indices.nbytes + index.postings.indices.nbytes) // 1024
    resident = mapped_pages_kb(str(folder / INDEX_ARRAYS))[0]
    if release:
        assert resident < 0.25 * indices_kb, (resident, indices_kb)
    else:
        assert resident >= 0.9 * indices_kb, (resident, indices_kb)
    del index

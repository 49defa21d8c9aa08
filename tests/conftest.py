"""Shared fixtures: a tiny hand-written disease KB and an untrained tiny BART fitted on it.

Everything is built locally (no hub access); session-scoped so the suite builds each once.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from spacy_angel.kb.store import KnowledgeBase

TINY_CONCEPTS = {
    "D003924": ["type 2 diabetes mellitus", "diabetes mellitus type 2", "niddm", "adult onset diabetes"],
    "D003922": ["type 1 diabetes mellitus", "insulin dependent diabetes", "iddm", "juvenile diabetes"],
    "D001943": ["breast cancer", "breast carcinoma", "mammary cancer"],
    "D008175": ["lung cancer", "lung carcinoma", "pulmonary carcinoma"],
    "D006973": ["hypertension", "high blood pressure"],
    "D007022": ["hypotension", "low blood pressure"],
    "D009203": ["myocardial infarction", "heart attack"],
    "D008881": ["migraine", "migraine disorder"],
    "D003550": ["cystic fibrosis", "mucoviscidosis"],
    "D006816": ["huntington disease", "huntington chorea"],
}


@pytest.fixture(autouse=True, scope="session")
def _private_vectors_cache(tmp_path_factory):
    """The linker keeps dense name vectors in $SPACY_ANGEL_CACHE: the suite uses a folder of its own, never
    the user's ~/.cache (set here unless a run sets it)."""
    if "SPACY_ANGEL_CACHE" not in os.environ:
        os.environ["SPACY_ANGEL_CACHE"] = str(tmp_path_factory.mktemp("spacy-angel-cache"))
        yield
        del os.environ["SPACY_ANGEL_CACHE"]
    else:
        yield


def kb_from(concepts: dict) -> KnowledgeBase:
    """A KB of ``{id: [names]}`` (the tests' small hand-made KBs)."""
    kb = KnowledgeBase()
    for cid, names in concepts.items():
        for name in names:
            kb.add(cid, name)
    return kb


def make_tiny_kb() -> KnowledgeBase:
    return kb_from(TINY_CONCEPTS)


@pytest.fixture(scope="session")
def tiny_kb() -> KnowledgeBase:
    return make_tiny_kb()


@pytest.fixture(scope="session")
def tiny_kb_dir(tmp_path_factory, tiny_kb) -> Path:
    path = tmp_path_factory.mktemp("kb") / "tiny_kb"
    tiny_kb.to_disk(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_kb) -> Path:
    """An untrained ``init-model --size tiny`` model + tokenizer (a few seconds to build)."""
    from spacy_angel.seq2seq.offline_init import init_model

    path = tmp_path_factory.mktemp("model") / "tiny_model"
    init_model(tiny_kb, path, size="tiny", seed=0)
    return path


def tiny_mentions_in_context() -> list:
    """Two names of every tiny concept, each in a short sentence (training and dev for tiny runs)."""
    from spacy_angel.types import Mention

    out = []
    for i, (cid, names) in enumerate(TINY_CONCEPTS.items()):
        for name in names[:2]:
            text = f"patient {i} was treated for {name} in the clinic ."
            s = text.index(name)
            out.append(Mention(f"doc{i}", text, s, s + len(name), (cid,)))
    return out


def tiny_pubtator_corpus(path: Path) -> Path:
    """One document per concept, two of its names as mentions (title and abstract)."""
    blocks = []
    for n, (cid, names) in enumerate(TINY_CONCEPTS.items()):
        title, abstract = f"a study of {names[0]} in cohort {n}.", f"patients with {names[1]} were followed."
        text = title + " " + abstract
        a, b = text.index(names[0]), text.index(names[1], len(title))
        blocks.append(
            f"{1000 + n}|t|{title}\n{1000 + n}|a|{abstract}\n"
            f"{1000 + n}\t{a}\t{a + len(names[0])}\t{names[0]}\tDisease\t{cid}\n"
            f"{1000 + n}\t{b}\t{b + len(names[1])}\t{names[1]}\tDisease\t{cid}"
        )
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


SHARED_DATA_ENV = "SPACY_ANGEL_DATA"


class SharedData:
    """The datasets the project shares (NCBI-disease, BioSyn, MEDIC, ...): ``$SPACY_ANGEL_DATA``, else
    ``<repo>/../shared/data``. The one place tests find them, so no test hard-codes a machine's path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __truediv__(self, relative: str) -> Path:
        return self.root / relative

    def need(self, relative: str) -> Path:
        """The path of a shared file or folder; the test is skipped (saying where it looked) when absent."""
        path = self.root / relative
        if not path.exists():
            pytest.skip(f"{relative} is not in the shared data at {self.root} (set {SHARED_DATA_ENV} to point elsewhere)")
        return path


def shared_data_root() -> Path:
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> SharedData:
    return SharedData(shared_data_root())


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train ~10x faster on one thread when the 2 cores are shared with other jobs.

    Module-scoped, so module fixtures that train (e.g. a positive model) also run on one thread;
    use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kill_at():
    """``kill_at(step)``: a Trainer callback that simulates the process being killed after ``step``
    steps (it raises, so nothing after that step runs), for the kill-and-resume tests."""
    from transformers import TrainerCallback

    class KillAt(TrainerCallback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                raise KeyboardInterrupt("killed")

    return KillAt


_MAPPED_PAGES = """
import sys
from smaps import mapped_pages_kb
{setup}
print("ready", flush=True)
sys.stdin.readline()
print(*mapped_pages_kb({suffix!r}), flush=True)
"""


def mapped_pages_of_two_processes(setup: str, suffix: str, *args: str) -> tuple:
    """``(Rss, Pss)`` kB, in the first of two live processes, of the mappings of files whose names end with
    ``suffix``, after each ran ``setup`` (Python that loads and touches them; ``sys.argv[1:]`` are ``args``).
    Both processes hold their pages while each one reads its smaps, so shared pages count half in each."""
    import subprocess
    import sys

    script = _MAPPED_PAGES.format(setup=setup, suffix=suffix)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    procs = [subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        readings = []
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
            readings.append([int(x) for x in p.stdout.readline().split()])
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return tuple(readings[0])


def broken_artefact_faults(damage: dict, surface: str, outcome: str, test: str) -> list:
    """Rows of docs/reliability.md's faults table (collected by tests/test_bad_inputs.py), one per damage
    case of a parametrised ``test`` (``module.py::test_name``)."""
    return [(f"broken artefact: {what}", surface, outcome, f"{test}[{key}]") for key, what in damage.items()]


# A tiny NER corpus (character spans of "Disease"), for the NER-vote tests.
TINY_NER_TRAIN = [
    ("Boys with Duchenne muscular dystrophy lose ambulation.", [(10, 37)]),
    ("Her mother had breast cancer and ovarian cancer.", [(15, 28), (33, 47)]),
    ("Cystic fibrosis affects the lungs.", [(0, 15)]),
    ("Patients with colorectal cancer were enrolled.", [(14, 31)]),
    ("Huntington disease is inherited.", [(0, 18)]),
    ("No sign of myotonic dystrophy was seen.", [(11, 29)]),
]
TINY_NER_TEXTS = ["Girls with cystic fibrosis and breast cancer.",
                  "Myotonic dystrophy and Huntington disease are rare.",
                  "Colorectal cancer in boys with ovarian cancer.", "The lungs of patients were seen."]


def train_tiny_ner(seed: int):
    """spaCy's own CPU NER config (a tok2vec the NER listens to, width 32), trained 40 epochs on
    ``TINY_NER_TRAIN``: seeds disagree on ``TINY_NER_TEXTS``, so votes over them differ."""
    import random

    from spacy.cli.init_config import init_config
    from spacy.training import Example
    from spacy.util import fix_random_seed, load_model_from_config

    fix_random_seed(seed)
    config = init_config(lang="en", pipeline=["ner"], optimize="efficiency")
    config["components"]["tok2vec"]["model"]["encode"]["width"] = 32
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": [(s, e, "Disease") for s, e in ents]})
                for text, ents in TINY_NER_TRAIN]
    optimizer = nlp.initialize(lambda: examples)
    rnd = random.Random(seed)
    for _ in range(40):
        rnd.shuffle(examples)
        nlp.update(examples, sgd=optimizer, drop=0.2)
    return nlp


@pytest.fixture(scope="session")
def tiny_ner_seeds(tmp_path_factory) -> list:
    """Three :func:`train_tiny_ner` pipelines (seeds 0, 1, 2) saved to disk, as trained NER models are."""
    root = tmp_path_factory.mktemp("ner-seeds")
    paths = []
    for seed in (0, 1, 2):
        train_tiny_ner(seed).to_disk(root / f"seed-{seed}")
        paths.append(root / f"seed-{seed}")
    return paths


PROJECT_SCRIPTS = Path(__file__).resolve().parents[1] / "projects" / "angel" / "scripts"


def project_script(name: str):
    """A module of ``projects/angel/scripts`` (they import one another by bare name, as weasel runs them)."""
    import importlib
    import sys

    sys.path.insert(0, str(PROJECT_SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(PROJECT_SCRIPTS))

"""The README's ```bash commands, run: a command the README shows must not error out.

Why: a README drifts from the code quietly (an option renamed, a file the example never builds).
Every ``spacy-angel`` line of every bash block runs in process (typer's CliRunner), in README
order, in one scratch directory where the example's input names exist as tiny files
(``CTD_diseases.tsv.gz``, ``processed_train/``, an ``en_core_sci_sm`` pipeline directory, ...), so
``kb build ... --output kb/medic`` feeds the lines after it. Training runs a few steps instead of
thousands and ``--size small`` becomes ``tiny`` (seconds in all); ``--engine ray`` starts a local
Ray, so it runs under ``-m slow``. Other lines (``bash scripts/...``, ``pip``) are skipped with the
reason. A static check also follows the training example's data flow: each model, KB and report a
command reads was written by an earlier command.
"""
from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from conftest import TINY_CONCEPTS

README = Path(__file__).resolve().parents[2] / "README.md"

#: lines that are not ``spacy-angel`` commands: what runs them instead
NOT_RUN_HERE = {
    "bash scripts/main.sh": "builds the offline HPO default (minutes); tests/training/test_hpo_default.py runs its main()",
    "bash scripts/test.sh": "is this test suite",
    "pip install": "installs packages from the network",
}
#: training (sub)commands: the README's own data-flow example
TRAINING = ("train positive", "train mine", "train dpo", "train iterate", "train evaluate", "train compare", "train fuse")
#: the test keeps the commands but not their length
FAST_OPTIONS = {"--max-steps": "3", "--epochs": "1", "--eval-steps": "2", "--batch-size": "8", "--size": "tiny",
                "--workers": "1"}


@dataclass(frozen=True)
class Command:
    block: int
    line: str
    argv: Tuple[str, ...]  # after ``spacy-angel``; empty for other lines

    @property
    def name(self) -> str:
        words = [a for a in self.argv if not a.startswith("-")]
        return " ".join(words[:2]) if words and words[0] in ("train", "kb") else (words[0] if words else "")

    @property
    def slow(self) -> bool:
        """Starts a Ray cluster (tens of seconds): run under -m slow."""
        return "--engine" in self.argv and "ray" in self.argv


def bash_blocks(text: str) -> List[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def readme_commands(text: Optional[str] = None) -> List[Command]:
    """Every command line of every bash block (continuation lines joined, comments dropped)."""
    out = []
    for b, block in enumerate(bash_blocks(text if text is not None else README.read_text(encoding="utf-8"))):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                argv = tuple(words[1:]) if words[0] == "spacy-angel" else ()
                out.append(Command(b, " ".join(words), argv))
    return out


def fast(argv: Sequence[str]) -> List[str]:
    """``argv`` with the options of FAST_OPTIONS set to their short values."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in FAST_OPTIONS:
            out[i + 1] = FAST_OPTIONS[arg]
    if out[:2] == ["train", "dpo"] and "--max-steps" not in out:
        out += ["--max-steps", "2"]  # --epochs 1 over the mined pairs is still too long for a test
    return out


# ----------------------------------------------------------------------------------- example inputs
def _concept_lines() -> List[Tuple[str, List[str]]]:
    return list(TINY_CONCEPTS.items())


def write_example_inputs(root: Path, model_dir: Path) -> None:
    """The files the README's examples name, tiny, in ``root`` (its commands run there)."""
    header = "# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\tParentTreeNumbers\tSynonyms\tSlimMappings\n"
    medic = header + "".join(f"{names[0]}\tMESH:{cid}\t\t\t\t\t\t{'|'.join(names[1:])}\t\n" for cid, names in _concept_lines())
    (root / "CTD_diseases.tsv.gz").write_bytes(gzip.compress(medic.encode()))
    rrf = lambda *f: "|".join(f) + "|\n"  # noqa: E731
    (root / "MRCONSO.RRF").write_text("".join(
        rrf(f"C{i}", "ENG", "P", "L", "PF", "S", "Y", f"A{i}{j}", "", "", "", "MSH", "PT", cid, name, "0", "N", "")
        for i, (cid, names) in enumerate(_concept_lines()) for j, name in enumerate(names)))
    (root / "MRSTY.RRF").write_text("".join(
        rrf(f"C{i}", "T047" if i % 2 == 0 else "T191", "B", "Disease or Syndrome", f"AT{i}", "256")
        for i in range(len(TINY_CONCEPTS))))
    dictionary = "".join(f"{cid}||{'|'.join(names)}\n" for cid, names in _concept_lines())
    for name in ("dev_dictionary.txt", "test_dictionary.txt"):
        (root / name).write_text(dictionary)
    for split in ("processed_train", "processed_dev", "processed_test"):
        (root / split).mkdir()
        lines = [f"{100 + i}||0|{len(names[1])}||Disease||{names[1]}||{cid}" for i, (cid, names) in enumerate(_concept_lines())]
        (root / split / "0.concept").write_text("\n".join(lines) + "\n")
    text = "Women with breast cancer and high blood pressure were followed."
    records = [{"id": "a", "text": text, "spans": [{"start": 11, "end": 24}, {"start": 29, "end": 48}]},
               {"id": "b", "text": "migraine", "start": 0, "end": 8}]
    (root / "mentions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "pubmed").mkdir()
    shutil.copy(root / "mentions.jsonl", root / "pubmed" / "part-0.jsonl")
    (root / "notes.txt").write_text(text + "\nA migraine and cystic fibrosis.\n")
    _ner_pipeline(root / "en_core_sci_sm")
    (root / "models").mkdir()
    shutil.copytree(model_dir, root / "models" / "trained")  # "a trained model": the tiny one stands in


def _ner_pipeline(path: Path) -> None:
    """A directory ``spacy.load("en_core_sci_sm")`` finds (a path wins when no such package is installed)."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": "DISEASE", "pattern": names[0]} for names in TINY_CONCEPTS.values()]
                       + [{"label": "DISEASE", "pattern": "high blood pressure"}])
    nlp.to_disk(path)


def run_commands(commands: Sequence[Command], root: Path, include_slow: bool) -> List[str]:
    """Run ``commands`` in order in ``root`` (each must exit 0); returns what was not run, and why."""
    from typer.testing import CliRunner

    from spacy_angel.apps.cli import get_app

    not_run: List[str] = []
    for cmd in commands:
        if not cmd.argv:
            reason = next((why for start, why in NOT_RUN_HERE.items() if cmd.line.startswith(start)), None)
            assert reason is not None, f"README shows `{cmd.line}`: run it here or say in NOT_RUN_HERE why not"
            not_run.append(f"{cmd.line}: {reason}")
            continue
        if cmd.slow and not include_slow:
            not_run.append(f"{cmd.line}: starts a local Ray cluster (pytest -m slow)")
            continue
        argv = fast(cmd.argv)
        if "--device" not in argv and cmd.name in ("link", "train evaluate", "train fuse", "train mine"):
            argv += ["--device", "cpu"]
        result = CliRunner().invoke(get_app(), argv)
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert result.exit_code == 0 and not escaped, (
            f"README command failed: spacy-angel {' '.join(argv)}\n{result.output}\n{result.exception!r}"
        )
    return not_run


# ----------------------------------------------------------------------------------- tests
def training_commands() -> List[Command]:
    """The bash blocks that train (the ANGEL example and the hybrid one after it), in order."""
    blocks: Dict[int, List[Command]] = {}
    for cmd in readme_commands():
        blocks.setdefault(cmd.block, []).append(cmd)
    return [c for _, block in sorted(blocks.items()) if any(x.name in TRAINING for x in block) for c in block]


@pytest.fixture
def example_dir(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> Path:
    write_example_inputs(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("one_torch_thread")
def test_readme_commands_run(example_dir: Path) -> None:
    not_run = run_commands(readme_commands(), example_dir, include_slow=False)
    assert (example_dir / "kb" / "umls").is_dir() and (example_dir / "linked.html").is_file()
    assert (example_dir / "angel" / "fusion.json").is_file() and (example_dir / "bins.png").is_file()
    assert all("Ray" in why or "scripts/" in why or "pip install" in why for why in not_run), not_run


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_readme_commands_run_with_ray(example_dir: Path) -> None:
    pytest.importorskip("ray", reason="the [scale] extra is not installed")
    run_commands(readme_commands(), example_dir, include_slow=True)
    assert list((example_dir / "linked").glob("*.jsonl"))


#: where each command reads an artifact another command must have written (positional index) and
#: which option names its output; corpora and KB source files are the example's given inputs
READS = {"init-model": (0,), "link": (0, 1), "train positive": (0, 1), "train mine": (0, 1), "train dpo": (0, 1, 2),
         "train evaluate": (0, 1), "train fuse": (0, 1), "train compare": (0, 1)}
WRITES = {"kb build": ("--output", "-o"), "init-model": (1,), "train positive": ("-o", "--output"),
          "train mine": ("-o", "--output"), "train dpo": ("-o", "--output"), "train evaluate": ("-o", "--output")}


def _positionals(cmd: Command) -> List[str]:
    """Positional arguments after the command name (options and their values dropped)."""
    words = list(cmd.argv[2:] if cmd.argv[0] in ("train", "kb") else cmd.argv[1:])
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = not word.startswith("--kb-names") and word not in ("--overwrite", "--keep-case")
        else:
            out.append(word)
    return out


def dataflow_problems(cmds: Sequence[Command]) -> List[str]:
    """Models, KBs, pairs and reports read before any earlier command wrote them."""
    written, problems = set(), []
    for cmd in cmds:
        if not cmd.argv:
            continue
        args = _positionals(cmd)
        for i in READS.get(cmd.name, ()):
            if i < len(args) and args[i] != "tfidf" and args[i] not in written:
                problems.append(f"`{cmd.line}` reads {args[i]}, which no earlier command writes")
        for where in WRITES.get(cmd.name, ()):
            if isinstance(where, int):
                written.add(args[where])
            elif where in cmd.argv:
                written.add(cmd.argv[cmd.argv.index(where) + 1])
    return problems


def test_readme_training_example_reads_only_what_it_wrote():
    cmds = training_commands()
    assert any(c.name == "train compare" for c in cmds)
    assert dataflow_problems(cmds) == []


def test_the_dataflow_check_sees_a_missing_kb_and_report():
    text = ("```bash\nspacy-angel kb build d.txt --output kb_dev\nspacy-angel train evaluate m kb_test t -o a.json\n"
            "spacy-angel train compare positive.json a.json\n```\n")
    problems = dataflow_problems(readme_commands(text))
    assert any("reads kb_test" in p for p in problems) and any("reads positive.json" in p for p in problems)
    assert any("reads m," in p for p in problems) and not any("reads a.json" in p for p in problems)

"""Bad inputs, one table: every surface a user touches, a mistake made there, what happens, what it says.

Why one table: a user's mistake must end in a clear error (an exit code and a message naming the
file, line or setting, never a traceback) or in a documented result, and must neither lose the
user's files nor leave a partial output behind. Each row provokes one mistake in process
(typer's CliRunner, or a Python call) and the test asserts the exit code or exception type, the
message fragment, and, for every failure, that the row's working directory is byte for byte what
it was before the call. ``docs/reliability.md`` is generated from the same rows, so the documented
behaviour is the tested one::

    python tests/test_bad_inputs.py --markdown > docs/reliability.md
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

import pytest
from thinc.api import ConfigValidationError

from spacy_angel.errors import LinkerError

Content = Union[str, bytes]
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


# ----------------------------------------------------------------------------------- the machinery
@dataclass
class Ctx:
    """What a row may use: its own empty directory and the shared tiny KB, model and tokenizers."""

    tmp: Path
    kb_dir: Path
    model_dir: Path
    other_tokenizer: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def write(self, name: str, content: Content) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def model_copy(self, name: str = "model") -> Path:
        """A private copy of the tiny model, for rows that damage it or write into it."""
        return Path(shutil.copytree(self.model_dir, self.tmp / name))

    def fill(self, arg: str) -> str:
        return arg.format(tmp=self.tmp, kb=self.kb_dir, model=self.model_dir, out=self.out)


@dataclass
class Outcome:
    """What a call did: exit code (CLI), the exception that escaped (a traceback for a user), the text."""

    code: Optional[int]
    error: Optional[BaseException]
    text: str


Provoke = Callable[[Ctx], Outcome]


@dataclass(frozen=True)
class Case:
    """One row: ``expect`` is an exit code, or the exception type a Python call raises (0: no error)."""

    id: str
    surface: str
    bad_input: str
    expect: Union[int, Type[BaseException]]
    message: str
    provoke: Provoke
    files: Mapping[str, Content] = field(default_factory=dict)
    setup: Optional[Callable[[Ctx], None]] = None
    check: Optional[Callable[[Ctx, Outcome], None]] = None

    @property
    def outcome(self) -> str:
        if isinstance(self.expect, int):
            return "no error" if self.expect == 0 else f"exit {self.expect}"
        return f"`{self.expect.__name__}`"


def _invoke(app_getter: Callable[[], object], args: Sequence[str], ctx: Ctx) -> Outcome:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app_getter(), [ctx.fill(a) for a in args])
    escaped = result.exception if result.exception is not None and not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, escaped, result.output)


def _main_app() -> object:
    from spacy_angel.apps.cli import get_app

    return get_app()


def _train_app() -> object:
    from training.cli import app

    return app


def cli(*args: str) -> Provoke:
    """``spacy-angel ARGS``; ``{tmp}``, ``{kb}``, ``{model}``, ``{out}`` are filled in per row."""
    return lambda ctx: _invoke(_main_app, args, ctx)


def train(*args: str) -> Provoke:
    """``spacy-angel train ARGS`` (the ``training.cli`` app itself)."""
    return lambda ctx: _invoke(_train_app, args, ctx)


def py(func: Callable[[Ctx], str]) -> Provoke:
    """A Python call: its exception, or the summary string it returns."""

    def provoke(ctx: Ctx) -> Outcome:
        try:
            return Outcome(None, None, func(ctx))
        except Exception as err:  # the row says which type is expected
            return Outcome(None, err, str(err))

    return provoke


# ----------------------------------------------------------------------------------- inputs
def pubtator(title: str, abstract: str, anns: Sequence[tuple]) -> str:
    """One PubTator document; each (surface, ids) annotation at its first occurrence."""
    text = f"{title} {abstract}"
    lines = [f"1|t|{title}", f"1|a|{abstract}"]
    for surface, ids in anns:
        start = text.index(surface)
        lines.append(f"1\t{start}\t{start + len(surface)}\t{surface}\tDisease\t{ids}")
    return "\n".join(lines) + "\n"


ONE_MENTION = pubtator("Breast cancer today.", "None.", [("Breast cancer", "D001943")])
ABSENT_IDS = pubtator("Gout today.", "Gout again.", [("Gout", "D006073")])
GOOD_TSV = "D1\tfoo disease\nD2\tbar syndrome\n"
GOOD_JSONL = json.dumps({"id": "d1", "text": "She had breast cancer.", "start": 8, "end": 21}) + "\n"
PAIR = {"text": "breast cancer", "start": 0, "end": 13, "chosen": "breast cancer", "rejected": "lung cancer"}
MRCONSO_ROW = "C1|ENG|P|L1|PF|S1|Y|A1||||MSH|PT|D1|breast cancer|0|N||"


def _link_nlp(ctx: Ctx, **config: object):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"model": str(ctx.model_dir), "kb": str(ctx.kb_dir), "device": "cpu", **config})
    return nlp


def component(**config: object) -> Callable[[Ctx], str]:
    """Add ``angel_linker`` with ``config`` (over a working model and KB) and link one span."""

    def run(ctx: Ctx) -> str:
        nlp = _link_nlp(ctx, **config)
        doc = nlp.make_doc("breast cancer")
        doc.ents = [doc.char_span(0, 13, label="DISEASE")]
        return f"linked as {nlp(doc).ents[0]._.cui}"

    return run


def _summary(docs: Sequence) -> str:
    ents = [e for d in docs for e in d.ents]
    return f"no error; {len(ents)} spans, {sum(e._.cui is not None for e in ents)} linked"


def link_texts(*texts: str) -> Callable[[Ctx], str]:
    return lambda ctx: _summary(list(_link_nlp(ctx).pipe(texts)))


def long_span(ctx: Ctx) -> str:
    """A 10,000-token entity: the model input is cut to the model's length, a candidate still comes out."""
    from spacy.tokens import Span

    nlp = _link_nlp(ctx)
    doc = nlp.make_doc(" ".join(["breast cancer"] * 5000))
    doc.ents = [Span(doc, 0, len(doc), label="DISEASE")]
    doc = nlp(doc)
    ent = doc.ents[0]
    linker = nlp.get_pipe("angel_linker").linker
    from spacy_angel.types import Mention

    source, _ = linker.encode(Mention("d", doc.text, 0, len(doc.text)))
    truncated = len(source) <= linker.max_input_length < len(doc)
    assert ent._.cui in linker.kb and ent._.candidates
    return f"no error; {len(doc)} tokens, encoder input {'truncated' if truncated else 'NOT truncated'}; linked"


def config_string_beams(ctx: Ctx) -> str:
    """A pipeline config with ``num_beams = "five"``: spaCy's registry refuses the type."""
    import spacy
    from thinc.api import Config

    nlp = spacy.blank("en")
    nlp.add_pipe("angel_linker", config={"device": "cpu"})
    cfg = Config(nlp.config)
    cfg["components"]["angel_linker"]["num_beams"] = "five"
    spacy.util.load_model_from_config(cfg, auto_fill=True)
    return "loaded"


def _linker_with_trie(ctx: Ctx, trie_for: Callable[[object, object], object]) -> str:
    from spacy_angel.seq2seq.loading import load_model_and_tokenizer
    from spacy_angel.kb.readers import load_kb
    from spacy_angel.linking.linker import AngelLinker

    kb = load_kb(ctx.kb_dir)
    model, tokenizer = load_model_and_tokenizer(ctx.model_dir, device="cpu")
    AngelLinker(model, tokenizer, kb, trie_for(kb, tokenizer))
    return "linker made"


def trie_of_other_tokenizer(ctx: Ctx) -> str:
    from transformers import AutoTokenizer

    from spacy_angel.trie.kb_trie import build_trie

    other = AutoTokenizer.from_pretrained(str(ctx.other_tokenizer))
    return _linker_with_trie(ctx, lambda kb, tokenizer: build_trie(kb, other))


def trie_of_other_kb(ctx: Ctx) -> str:
    from spacy_angel.kb.store import KnowledgeBase
    from spacy_angel.trie.kb_trie import build_trie

    smaller = KnowledgeBase()
    smaller.add("D001943", "breast cancer")
    return _linker_with_trie(ctx, lambda kb, tokenizer: build_trie(smaller, tokenizer))


def link_ray_without_extra(ctx: Ctx) -> Outcome:
    """``--engine ray`` where the [scale] extra is not installed (the import is made to fail)."""
    saved = sys.modules.get("spacy_angel.apps.ray_linking")
    sys.modules["spacy_angel.apps.ray_linking"] = None  # type: ignore[assignment]  # makes `from .scale import` fail
    try:
        return _invoke(_main_app, ["link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--engine", "ray"], ctx)
    finally:
        if saved is None:
            del sys.modules["spacy_angel.apps.ray_linking"]
        else:
            sys.modules["spacy_angel.apps.ray_linking"] = saved


def needs_ray(ctx: Ctx) -> None:
    pytest.importorskip("ray", reason="the [scale] extra is not installed (the row above covers that case)")


def model_without_tokenizer(ctx: Ctx) -> None:
    ctx.write("notok/config.json", (ctx.model_dir / "config.json").read_text())


def model_with_fusion(text: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.model_copy()
        ctx.write("model/fusion.json", text)

    return setup


def survives(name: str) -> Callable[[Ctx, Outcome], None]:
    """The user's file is still there, unchanged (the generic check compares every byte too)."""

    def check(ctx: Ctx, outcome: Outcome) -> None:
        assert (ctx.tmp / name).read_text() == "mine"

    return check


def names_both_tokenizers(ctx: Ctx, outcome: Outcome) -> None:
    assert str(ctx.other_tokenizer) in outcome.text and str(ctx.model_dir) in outcome.text


def no_fusion_written(ctx: Ctx, outcome: Outcome) -> None:
    assert not (ctx.tmp / "model" / "fusion.json").exists()


USER_DIR = {"out/notes.txt": "mine"}


# ----------------------------------------------------------------------------------- the table
CASES: List[Case] = [
    # -------------------------------------------------------------- kb build / kb info
    Case("kb-missing-file", "kb build", "the KB file does not exist", 1, "nope.tsv: [E160] file not found",
         cli("kb", "build", "{tmp}/nope.tsv", "-o", "{out}")),
    Case("kb-empty-file", "kb build", "the KB file is empty", 1, "empty.tsv: [E162] the file is empty (no KB names)",
         cli("kb", "build", "{tmp}/empty.tsv", "-o", "{out}"), files={"empty.tsv": ""}),
    Case("kb-empty-file-format", "kb build", "an empty KB file with `--format tsv`", 1, "no names found in",
         cli("kb", "build", "{tmp}/empty.tsv", "-o", "{out}", "--format", "tsv"), files={"empty.tsv": "\n"}),
    Case("kb-tsv-missing-field", "kb build", "TSV line 2 has an id and no name", 1,
         "bad.tsv:2: field 'name': [E144] expected id<TAB>name", cli("kb", "build", "{tmp}/bad.tsv", "-o", "{out}", "--format", "tsv"),
         files={"bad.tsv": "D1\tfoo\nD2\n"}),
    Case("kb-unknown-format", "kb build", "`--format xml`", 1, "unknown format 'xml'; known formats: tsv, biosyn",
         cli("kb", "build", "{tmp}/kb.tsv", "-o", "{out}", "--format", "xml"), files={"kb.tsv": GOOD_TSV}),
    Case("kb-invalid-utf8", "kb build", "byte 0xff inside a name on line 2", 1,
         "bad.tsv:2: [E111] invalid UTF-8 byte 0xff at byte offset 19", cli("kb", "build", "{tmp}/bad.tsv", "-o", "{out}"),
         files={"bad.tsv": b"D1\tfoo disease\nD2\tb\xffr\n"}),
    Case("kb-truncated-gzip", "kb build", "a `.tsv.gz` cut short", 1, "the gzip stream is truncated or corrupt",
         cli("kb", "build", "{tmp}/kb.tsv.gz", "-o", "{out}", "--format", "tsv"),
         files={"kb.tsv.gz": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x4b\x4c"}),
    Case("kb-obo-unquoted-synonym", "kb build", "an OBO `synonym:` value without quotes", 1,
         "hp.obo:4: field 'synonym': [E150] synonym: value is not a quoted string", cli("kb", "build", "{tmp}/hp.obo", "-o", "{out}"),
         files={"hp.obo": "[Term]\nid: HP:1\nname: seizure\nsynonym: fits EXACT []\n"}),
    Case("kb-umls-field-count", "kb build", "an MRCONSO row with 5 fields", 1,
         "MRCONSO.RRF:2: [E151] expected 18 '|'-separated fields, found 5",
         cli("kb", "build", "{tmp}/MRCONSO.RRF", "-o", "{out}"), files={"MRCONSO.RRF": MRCONSO_ROW + "\nC2|ENG|P|L1|\n"}),
    Case("kb-umls-empty-cui", "kb build", "an MRCONSO row whose CUI is empty", 1, "MRCONSO.RRF:1: field 'CUI': [E153] empty CUI",
         cli("kb", "build", "{tmp}/MRCONSO.RRF", "-o", "{out}"), files={"MRCONSO.RRF": "|" + MRCONSO_ROW.split("|", 1)[1] + "\n"}),
    Case("kb-json-bad-entry", "kb build", "a JSON KB whose names hold a number (line 3)", 1,
         "kb.json:3: field 'names': [E159] bad name entry 3", cli("kb", "build", "{tmp}/kb.json", "-o", "{out}"),
         files={"kb.json": '{\n  "D1": ["foo"],\n  "D2": ["bar", 3]\n}\n'}),
    Case("kb-json-invalid", "kb build", "a JSON KB cut off mid-object", 1, "kb.json:1: [E155] invalid JSON (Expecting ',' delimiter",
         cli("kb", "build", "{tmp}/kb.json", "-o", "{out}"), files={"kb.json": '{"D1": ["foo"'}),
    Case("kb-output-user-dir", "kb build", "`--output` is a non-empty folder of the user's", 1,
         "is not empty and is not a KB directory written by spacy-angel (it holds notes.txt)",
         cli("kb", "build", "{tmp}/kb.tsv", "-o", "{out}"), files={"kb.tsv": GOOD_TSV, **USER_DIR},
         check=survives("out/notes.txt")),
    Case("kb-output-is-file", "kb build", "`--output` is an existing file", 1, "exists and is not a directory",
         cli("kb", "build", "{tmp}/kb.tsv", "-o", "{tmp}/notes.txt"), files={"kb.tsv": GOOD_TSV, "notes.txt": "mine"},
         check=survives("notes.txt")),
    Case("kb-info-missing", "kb info", "`kb info` on a path that does not exist", 1, "does not exist",
         cli("kb", "info", "{tmp}/nokb")),
    # -------------------------------------------------------------- init-model
    Case("init-missing-kb", "init-model", "the KB path does not exist", 1, "nokb does not exist",
         cli("init-model", "{tmp}/nokb", "{out}")),
    Case("init-unknown-size", "init-model", "`--size huge`", 1, "unknown size 'huge': choose one of tiny, small, base",
         cli("init-model", "{kb}", "{out}", "--size", "huge")),
    Case("init-output-user-dir", "init-model", "OUTPUT_DIR is a non-empty folder of the user's", 1,
         "[E113] output directory", cli("init-model", "{kb}", "{out}"), files=USER_DIR, check=survives("out/notes.txt")),
    Case("init-missing-corpus", "init-model", "`--corpus` names a missing file", 1, "nocorpus.txt does not exist",
         cli("init-model", "{kb}", "{out}", "--corpus", "{tmp}/nocorpus.txt")),
    # -------------------------------------------------------------- link
    Case("link-missing-input", "link", "the input file does not exist", 1, "none.jsonl does not exist",
         cli("link", "{model}", "{kb}", "{tmp}/none.jsonl", "-o", "{out}")),
    Case("link-malformed-jsonl", "link", "JSONL line 2 is not JSON", 1, "in.jsonl:2: [E258] not valid JSON",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": GOOD_JSONL + "{oops\n"}),
    Case("link-span-outside-text", "link", "a span ends after its text", 1, "in.jsonl:1: span start/end (1, 10) outside the text",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"),
         files={"in.jsonl": '{"text": "abc", "start": 1, "end": 10}\n'}),
    Case("link-missing-text", "link", "a JSONL record without `text`", 1, "in.jsonl:1: missing field 'text'",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": '{"id": 1}\n'}),
    Case("link-invalid-utf8", "link", "byte 0xff in JSONL line 2", 1, "in.jsonl:2: [E111] invalid UTF-8 byte 0xff",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"),
         files={"in.jsonl": GOOD_JSONL.encode() + b'{"text": "\xff"}\n'}),
    Case("link-plain-text-no-ner", "link", "a plain-text input without `--ner`", 1, "is plain text: name an NER pipeline with --ner",
         cli("link", "{model}", "{kb}", "{tmp}/notes.txt", "-o", "{out}"), files={"notes.txt": "breast cancer\n"}),
    Case("link-missing-kb", "link", "the KB path does not exist", 1, "nokb does not exist",
         cli("link", "{model}", "{tmp}/nokb", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": GOOD_JSONL}),
    Case("link-model-no-config", "link", "a model directory without `config.json`", 1, "[E002] model directory",
         cli("link", "{tmp}/empty_model", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"),
         files={"in.jsonl": GOOD_JSONL, "empty_model/weights.txt": "x"}),
    Case("link-model-no-tokenizer", "link", "a model directory with `config.json` and no tokenizer", 1,
         "[E003] model directory", cli("link", "{tmp}/notok", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"),
         files={"in.jsonl": GOOD_JSONL}, setup=model_without_tokenizer),
    Case("link-mode-bm25", "link", "`--mode bm25`", 1, "[E067] unknown linking mode 'bm25': use one of beam, rerank, hybrid",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--mode", "bm25"), files={"in.jsonl": GOOD_JSONL}),
    Case("link-num-candidates-0", "link", "`--num-candidates 0`", 1, "[E066] num_candidates must be at least 1, got 0",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--num-candidates", "0"), files={"in.jsonl": GOOD_JSONL}),
    Case("link-top-k-0", "link", "`--top-k 0`", 1, "[E115] --top-k must be at least 1, got 0",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--top-k", "0"), files={"in.jsonl": GOOD_JSONL}),
    Case("link-dtype-int4", "link", "`--dtype int4`", 1, "[E007] unknown dtype 'int4': use float32, float16, bfloat16 or int8",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--dtype", "int4"), files={"in.jsonl": GOOD_JSONL}),
    Case("link-int8-on-gpu", "link", "`--dtype int8` with `--device cuda`", 1, "[E008] dtype 'int8' (dynamic int8 quantisation) runs on the CPU only",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--dtype", "int8", "--device", "cuda"),
         files={"in.jsonl": GOOD_JSONL}),
    Case("link-num-beams-0", "link", "`--num-beams 0`", 1, "[E060] num_beams and batch_size must be at least 1",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--num-beams", "0", "--mode", "beam"),
         files={"in.jsonl": GOOD_JSONL}),
    Case("link-fusion-malformed", "link", "a malformed `fusion.json` beside the model", 1, "fusion.json cannot be used (not valid JSON",
         cli("link", "{tmp}/model", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": GOOD_JSONL},
         setup=model_with_fusion("{bad")),
    Case("link-fusion-unknown-feature", "link", "`fusion.json` with a feature the linker does not know", 1,
         "[E110]", cli("link", "{tmp}/model", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": GOOD_JSONL},
         setup=model_with_fusion('{"bm25": 1.0}')),
    Case("link-output-is-dir", "link", "`--output` is an existing folder", 1, "[E117]",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}"), files={"in.jsonl": GOOD_JSONL, **USER_DIR},
         check=survives("out/notes.txt")),
    Case("link-html-is-dir", "link", "`--html` names an existing folder (the JSONL output is not written either)", 1,
         "is a directory (--html names a file)",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--html", "{tmp}/page"),
         files={"in.jsonl": GOOD_JSONL, "page/notes.txt": "mine"}, check=survives("page/notes.txt")),
    Case("link-unknown-engine", "link", "`--engine spark`", 1, "unknown engine 'spark': single or ray",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--engine", "spark"), files={"in.jsonl": GOOD_JSONL}),
    # -------------------------------------------------------------- link --engine ray
    Case("ray-not-installed", "link --engine ray", "`--engine ray` without the [scale] extra", 1,
         "--engine ray needs the [scale] extra: pip install 'spacy-angel[scale]'", link_ray_without_extra,
         files={"in.jsonl": GOOD_JSONL}),
    Case("ray-missing-glob", "link --engine ray", "an input glob that matches no file", 1, "no input files at",
         cli("link", "{model}", "{kb}", "{tmp}/shards/*.jsonl", "-o", "{out}", "--engine", "ray"), setup=needs_ray),
    Case("ray-with-html", "link --engine ray", "`--engine ray --html page.html`", 1, "--html needs the single engine",
         cli("link", "{model}", "{kb}", "{tmp}/in.jsonl", "-o", "{out}", "--engine", "ray", "--html", "{tmp}/page.html"),
         files={"in.jsonl": GOOD_JSONL}),
    # -------------------------------------------------------------- train positive
    Case("positive-missing-corpus", "train positive", "the training corpus does not exist", 1, "none.txt does not exist",
         train("positive", "{model}", "{kb}", "{tmp}/none.txt", "-o", "{out}")),
    Case("positive-malformed-pubtator", "train positive", "a PubTator annotation line with 5 columns", 1,
         "bad.txt:3: [E310] expected 6 or 7 tab-separated columns, got 5", train("positive", "{model}", "{kb}", "{tmp}/bad.txt", "-o", "{out}"),
         files={"bad.txt": "1|t|Migraine today.\n1|a|None.\n1\t0\t8\tMigraine\tD008881\n"}),
    Case("positive-ids-not-in-kb", "train positive", "a corpus none of whose ids is in the KB", 1, "no usable mentions in train",
         train("positive", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}"), files={"train.txt": ABSENT_IDS}),
    Case("positive-output-user-dir", "train positive", "`--output` is a non-empty folder of the user's", 1,
         "[E113] output directory", train("positive", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}", "--max-steps", "1"),
         files={"train.txt": ONE_MENTION, **USER_DIR}, check=survives("out/notes.txt")),
    Case("positive-output-is-input", "train positive", "`--output` is the starting model", 1, "is the input model directory",
         train("positive", "{tmp}/model", "{kb}", "{tmp}/train.txt", "-o", "{tmp}/model", "--max-steps", "1"),
         files={"train.txt": ONE_MENTION}, setup=lambda ctx: ctx.model_copy() and None),
    Case("positive-zero-threads", "train positive", "`--threads 0`", 1, "--threads: [E380] threads must be at least 1, got 0",
         train("positive", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}", "--threads", "0"), files={"train.txt": ONE_MENTION}),
    # -------------------------------------------------------------- train mine
    Case("mine-unknown-strategy", "train mine", "`--strategy random`", 1, "unknown strategy 'random': choose one of angel",
         train("mine", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}", "--strategy", "random"), files={"train.txt": ONE_MENTION}),
    Case("mine-output-is-dir", "train mine", "`--output` is an existing folder", 1, "[E117]",
         train("mine", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}"), files={"train.txt": ONE_MENTION, **USER_DIR},
         check=survives("out/notes.txt")),
    Case("mine-missing-model", "train mine", "the model directory does not exist", 1, "[E004] model directory",
         train("mine", "{tmp}/nomodel", "{kb}", "{tmp}/train.txt", "-o", "{out}"), files={"train.txt": ONE_MENTION}),
    Case("mine-held-out-without-list", "train mine", "`--held-out-kb-names` with a model trained without held-out names", 1,
         "held_out_kb_names.json does not exist: train the positive model with --kb-names-as-mentions --hold-out-kb-names",
         train("mine", "{model}", "{kb}", "{tmp}/train.txt", "-o", "{out}", "--held-out-kb-names"), files={"train.txt": ONE_MENTION}),
    Case("mine-held-out-list-wrong-kb", "train mine", "a held-out name that is not a name of its concept in this KB", 1,
         "held_out_kb_names.json: names[0] ('no such name', D003924) is not a name of that concept in this KB",
         train("mine", "{tmp}/model", "{kb}", "{tmp}/train.txt", "-o", "{out}", "--held-out-kb-names"),
         files={"train.txt": ONE_MENTION}, setup=lambda ctx: ctx.model_copy() and (ctx.tmp / "model" / "held_out_kb_names.json").write_text(
             '{"names": [{"name": "no such name", "id": "D003924"}]}', encoding="utf-8") and None),
    # -------------------------------------------------------------- train dpo
    Case("dpo-empty-pairs", "train dpo", "an empty pairs file", 1, "pairs.jsonl holds no pairs",
         train("dpo", "{model}", "{kb}", "{tmp}/pairs.jsonl", "-o", "{out}"), files={"pairs.jsonl": ""}),
    Case("dpo-malformed-pairs", "train dpo", "pairs line 2 is not JSON", 1, "pairs.jsonl:2: [E258] not valid JSON",
         train("dpo", "{model}", "{kb}", "{tmp}/pairs.jsonl", "-o", "{out}"),
         files={"pairs.jsonl": json.dumps(PAIR) + "\n{\"text\": \n"}),
    Case("dpo-pair-missing-field", "train dpo", "a pair without `rejected`", 1, "pairs.jsonl:1: missing field(s) rejected",
         train("dpo", "{model}", "{kb}", "{tmp}/pairs.jsonl", "-o", "{out}"),
         files={"pairs.jsonl": json.dumps({k: v for k, v in PAIR.items() if k != "rejected"}) + "\n"}),
    Case("dpo-missing-pairs", "train dpo", "the pairs file does not exist", 1, "pairs.jsonl does not exist",
         train("dpo", "{model}", "{kb}", "{tmp}/pairs.jsonl", "-o", "{out}")),
    Case("dpo-output-user-dir", "train dpo", "`--output` is a non-empty folder of the user's", 1, "[E113] output directory",
         train("dpo", "{model}", "{kb}", "{tmp}/pairs.jsonl", "-o", "{out}", "--max-steps", "1"),
         files={"pairs.jsonl": json.dumps(PAIR) + "\n", **USER_DIR}, check=survives("out/notes.txt")),
    # -------------------------------------------------------------- train fuse
    Case("fuse-one-mention", "train fuse", "a dev set of one mention", 1,
         "[E112] cannot fit fusion weights on 1 dev mention(s): at least 5 are needed",
         train("fuse", "{tmp}/model", "{kb}", "{tmp}/dev.txt", "--device", "cpu"), files={"dev.txt": ONE_MENTION},
         setup=lambda ctx: ctx.model_copy() and None, check=no_fusion_written),
    Case("fuse-ids-not-in-kb", "train fuse", "a dev set none of whose ids is in the KB", 1, "no usable mentions in dev",
         train("fuse", "{tmp}/model", "{kb}", "{tmp}/dev.txt"), files={"dev.txt": ABSENT_IDS},
         setup=lambda ctx: ctx.model_copy() and None, check=no_fusion_written),
    # -------------------------------------------------------------- train evaluate / compare
    Case("evaluate-mode-bm25", "train evaluate", "`--mode bm25`", 1, "[E067] unknown linking mode 'bm25'",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}", "--mode", "bm25"), files={"test.txt": ONE_MENTION}),
    Case("evaluate-ids-not-in-kb", "train evaluate", "a test corpus whose ids are all absent from the KB", 1,
         "no usable mentions in test", train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}"),
         files={"test.txt": ABSENT_IDS}),
    Case("evaluate-top-k-0", "train evaluate", "`--top-k 0`", 1, "[E115] --top-k must be at least 1, got 0",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}", "--top-k", "0"), files={"test.txt": ONE_MENTION}),
    Case("evaluate-num-candidates-0", "train evaluate", "`--num-candidates 0`", 1, "[E066] num_candidates must be at least 1",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}", "--num-candidates", "0"),
         files={"test.txt": ONE_MENTION}),
    Case("evaluate-output-is-dir", "train evaluate", "`--output` is an existing folder", 1, "[E117]",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}"), files={"test.txt": ONE_MENTION, **USER_DIR},
         check=survives("out/notes.txt")),
    Case("evaluate-unknown-corpus-format", "train evaluate", "`--corpus-format xml`", 1, "unknown corpus format 'xml'",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt", "-o", "{out}", "--corpus-format", "xml"),
         files={"test.txt": ONE_MENTION}),
    Case("evaluate-truncated-gzip", "train evaluate", "a PubTator `.gz` cut short", 1, "test.txt.gz:1: [E306] the gzip stream is truncated",
         train("evaluate", "{model}", "{kb}", "{tmp}/test.txt.gz", "-o", "{out}", "--corpus-format", "pubtator"),
         files={"test.txt.gz": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x4b\x4c"}),
    Case("compare-not-a-report", "train compare", "`train compare` on a file that is not a report", 1,
         "a.json is not a report written by `spacy-angel train evaluate`",
         train("compare", "{tmp}/a.json", "{tmp}/b.json"), files={"a.json": "{", "b.json": "{}"}),
    # -------------------------------------------------------------- train pretrain-data
    Case("pretrain-missing-kb", "train pretrain-data", "the KB path does not exist", 1, "nokb does not exist",
         train("pretrain-data", "{tmp}/nokb", "-o", "{out}")),
    Case("pretrain-output-is-file", "train pretrain-data", "`--output` is an existing file", 1,
         "[E114]", train("pretrain-data", "{kb}", "-o", "{tmp}/notes.txt"), files={"notes.txt": "mine"},
         check=survives("notes.txt")),
    # -------------------------------------------------------------- component
    Case("component-num-beams-0", "component", "`num_beams: 0`", ValueError,
         "[E100] angel_linker: config setting 'num_beams' must be an integer >= 1, got 0", py(component(num_beams=0))),
    Case("component-threshold-2", "component", "`threshold: 2.0`", ValueError,
         "config setting 'threshold' must be a probability in [0, 1], got 2.0", py(component(threshold=2.0))),
    Case("component-mode-x", "component", "`mode: \"x\"`", ValueError, "config setting 'mode' must be 'beam' or 'rerank' or 'hybrid'",
         py(component(mode="x"))),
    Case("component-fusion-bm25", "component", "`fusion: {\"bm25\": 1}`", ValueError, "unknown field(s) ['bm25']",
         py(component(fusion={"bm25": 1}))),
    Case("component-top-k-over-beams", "component", "`top_k: 10` with `num_beams: 5`", ValueError,
         "[E101] angel_linker: config setting 'top_k' (10) cannot exceed 'num_beams' (5)", py(component(top_k=10))),
    Case("component-kb-missing", "component", "`kb` names a path that does not exist", ValueError,
         "[E104] angel_linker: KB path", py(component(kb="/nonexistent/kb"))),
    Case("component-fusion-malformed", "component", "a malformed `fusion.json` beside the model", ValueError,
         "fusion.json cannot be used", py(lambda ctx: component(model=str(ctx.tmp / "model"))(ctx)),
         setup=model_with_fusion("[1, 2]")),
    Case("component-empty-doc", "component", "an empty text", 0, "no error; 0 spans, 0 linked", py(link_texts(""))),
    Case("component-no-ents", "component", "a doc without entities", 0, "no error; 0 spans, 0 linked",
         py(link_texts("No disease is mentioned here."))),
    Case("component-10k-token-span", "component", "one entity of 10,000 tokens", 0,
         "no error; 10000 tokens, encoder input truncated; linked", py(long_span)),
    # -------------------------------------------------------------- config
    Case("config-num-beams-string", "config", "`num_beams = \"five\"` in config.cfg", ConfigValidationError,
         "angel_linker -> num_beams",
         py(config_string_beams)),
    Case("config-no-model", "config", "a pipeline whose config has no `model`", ValueError,
         "[E102] angel_linker has no model", py(component(model=None))),
    # -------------------------------------------------------------- KB-model mismatch
    Case("mismatch-trie-tokenizer", "KB-model mismatch", "a trie spelled by another tokenizer than the model's", LinkerError,
         "[E021] the trie was built with a different tokenizer than the model's", py(trie_of_other_tokenizer),
         check=names_both_tokenizers),
    Case("mismatch-trie-kb", "KB-model mismatch", "a trie built from another KB", LinkerError,
         "[E022] the trie was built from a different KB", py(trie_of_other_kb)),
]


# ----------------------------------------------------------------------------------- the docs
def markdown() -> str:
    """docs/reliability.md: the table above as markdown (``tests/test_bad_inputs.py --markdown``)."""
    esc = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "# Reliability: bad inputs and what they do",
        "",
        "<!-- generated by `python tests/test_bad_inputs.py --markdown > docs/reliability.md`; do not edit -->",
        "",
        "Every row is a mistake a user can make, provoked by `tests/test_bad_inputs.py` (test id in the last",
        "column), which asserts the outcome (exit code or exception type) and that the message contains the",
        "fragment shown. For every failure the test also checks that nothing was written or lost: the row's",
        "directory is byte for byte what it was before the call (no partial output, the user's files intact).",
        "\"no error\" rows are documented results, not errors.",
        "",
        "| surface | bad input | outcome | message | test id |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        cells = [case.surface, case.bad_input, case.outcome, f"`{case.message}`" if "`" not in case.message else case.message, f"`{case.id}`"]
        lines.append("| " + " | ".join(esc(c) for c in cells) + " |")
    lines += ["", *faults_markdown()]
    return "\n".join(lines) + "\n"


def _faults_of(relative: str) -> list:
    """The FAULTS rows of a test module in a folder under tests/ (not on sys.path), read from its file."""
    import importlib.util

    path = Path(__file__).parent / relative
    spec = importlib.util.spec_from_file_location(f"_faults_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.FAULTS)


def faults_markdown() -> List[str]:
    """The faults and concurrency table: the rows ``tests/test_locks.py`` provokes."""
    from test_broken_artefacts import FAULTS as BROKEN  # tests/ is on sys.path (rootdir conftest, or run as a script)
    from test_kills import FAULTS as KILLS
    DYING = _faults_of("pipeline/test_dying_workers.py") + _faults_of("apps/test_ray_actor_kill.py")
    MAPPED = _faults_of("kb/test_kb_store.py") + _faults_of("retrieval/test_pruned_search.py") + \
        _faults_of("retrieval/test_ann_search.py") + _faults_of("retrieval/test_index_load_check.py") + \
        _faults_of("retrieval/test_tfidf_fit.py")
    from test_locks import FAULTS, WRITERS
    from test_write_faults import FAULTS as WRITES

    rows = [
        "## Faults and concurrency",
        "",
        "Every row is provoked by the test in the last column (under `tests/`). A command holds the lock of",
        "each output it writes (`parent/.name.lock`, `spacy_angel/locks.py`) for its whole run; a second run",
        "is refused before any work with `[E400]`, naming the first (pid, host, start time, command). A broken",
        "file in a saved pipeline gets a numbered error with a rebuild hint, or is rebuilt from the KB.",
        "",
        "| fault | surface | outcome | test |",
        "|---|---|---|---|",
    ]
    for surface in sorted(WRITERS):
        rows.append(f"| a second run writes the output of a live run | {surface} | exit 1, `[E400]` naming the holder; "
                    f"nothing written | `test_locks.py::test_every_writer_refuses_an_output_another_run_is_writing[{surface}]` |")
    rows += [f"| {fault} | {surface} | {outcome} | `{test}` |" for fault, surface, outcome, test in FAULTS + WRITES + BROKEN + MAPPED + KILLS + DYING]
    return rows + soak_markdown()


SOAK = Path(__file__).parents[1] / "docs" / "results" / "soak.json"


def soak_markdown() -> List[str]:
    """The soak figure from ``docs/results/soak.json`` (``bench/soak.py``: a benchmark, not a test)."""
    if not SOAK.exists():
        return []
    import json

    report = json.loads(SOAK.read_text(encoding="utf-8"))
    rows = ["", "## Soak (`bench/soak.py`)", "",
            f"Command: `python bench/soak.py --mentions {report['mentions_asked']}` (JSON: `docs/results/soak.json`). "
            f"{report['mentions']:,} NCBI-disease test mentions (documents repeated, each copy tagged so no input "
            f"repeats), MEDIC, {report['model']}; {report['machine'].get('nproc', report['machine'].get('cpus'))} cores. "
            "Growth: a worker's last RSS over its RSS after warm-up (the engine's start-up plus a tenth of its linking "
            "time) and over the second half of the run; the largest over the workers. The linker caches up to 100,000 "
            "results per worker by design, so RSS grows until a worker has seen that many distinct inputs; the "
            "second-half figure is the one that shows a leak once the caches are full. Equal: every mention's top "
            "concept equals the one-process run's.", "",
            "| engine | mentions | wall | RSS growth after warm-up | over the second half | equal to one process |",
            "|---|---:|---:|---:|---:|---|"]
    for name, run in report["engines"].items():
        growth, half = run.get("max_growth_pct"), run.get("max_second_half_growth_pct")
        rows.append(f"| {name} | {run['mentions']:,} | {run['wall_s']:.0f} s | "
                    f"{'reference' if growth is None else f'{growth:+.1f}%'} | "
                    f"{'reference' if half is None else f'{half:+.1f}%'} | "
                    f"{'yes' if report.get('equal_to_one_process', {}).get(name) else 'NO'} |")
    return rows


# ----------------------------------------------------------------------------------- the tests
def _snapshot(root: Path) -> Dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory, tiny_kb) -> Path:
    """A second tokenizer (a smaller vocabulary than the tiny model's), saved where a trie records its name."""
    from spacy_angel.seq2seq.offline_init import train_tokenizer

    path = tmp_path_factory.mktemp("other") / "other_tokenizer"
    other = train_tokenizer(tiny_kb, 300)
    assert len(other) < len(train_tokenizer(tiny_kb, 2000))  # the tiny KB saturates BPE near 356 tokens
    other.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


def test_table_is_well_formed():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert {case.surface for case in CASES} >= {
        "kb build", "init-model", "link", "link --engine ray", "train positive", "train mine", "train dpo",
        "train fuse", "train evaluate", "train pretrain-data", "component", "config", "KB-model mismatch",
    }


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, tiny_kb_dir: Path, tiny_model_dir: Path, other_tokenizer: Path) -> None:
    ctx = Ctx(tmp_path, tiny_kb_dir, tiny_model_dir, other_tokenizer)
    for name, content in case.files.items():
        ctx.write(name, content)
    if case.setup is not None:
        case.setup(ctx)
    before = _snapshot(tmp_path)
    outcome = case.provoke(ctx)
    if isinstance(case.expect, int):
        assert outcome.error is None, f"a traceback instead of a clear error: {outcome.error!r}\n{outcome.text}"
        if outcome.code is not None:
            assert outcome.code == case.expect, outcome.text
    else:
        assert isinstance(outcome.error, case.expect), f"expected {case.expect.__name__}, got {outcome.error!r}: {outcome.text}"
    assert case.message in outcome.text, outcome.text
    if case.expect != 0:
        assert _snapshot(tmp_path) == before, "a failed call wrote, changed or deleted files"
    if case.check is not None:
        case.check(ctx, outcome)


def test_docs_reliability_is_generated_from_the_table():
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/reliability.md is stale: python tests/test_bad_inputs.py --markdown > docs/reliability.md"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python tests/test_bad_inputs.py --markdown > docs/reliability.md")
    sys.stdout.write(markdown())

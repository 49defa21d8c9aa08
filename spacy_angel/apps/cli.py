"""The ``spacy-angel`` command line: build KBs, create offline models, link text.

``spacy-angel train ...`` lives in the separate ``training`` package (the ``[train]`` extra) and is
found through the ``spacy_angel_cli`` entry point group, so the runtime never imports it and works
without TRL or scikit-learn installed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer

from spacy_angel.apps.cli_support import fail, load_fusion_or_fail, load_kb_or_fail, writes
from spacy_angel.apps.records import link_record, read_link_input
from spacy_angel.errors import Errors, KBFormatError
from spacy_angel.fileio import atomic_open, check_output_file
from spacy_angel.kb.readers import FORMATS
from spacy_angel.kb.store import KnowledgeBase
from spacy_angel.retrieval.kb_build import build_kb
from spacy_angel.types import Candidate, Mention

app = typer.Typer(
    name="spacy-angel",
    help="Generative biomedical entity linking for spaCy (ANGEL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


kb_app = typer.Typer(help="Build and inspect knowledge bases.", no_args_is_help=True)


app.add_typer(kb_app, name="kb")


@kb_app.command("build")
@writes("output")
def kb_build(
    sources: List[Path] = typer.Argument(..., help="KB files (TSV, BioSyn dictionary, CTD MEDIC, OBO, UMLS MRCONSO.RRF)."),
    output: Path = typer.Option(..., "--output", "-o", help="KB directory to write."),
    format: str = typer.Option("auto", "--format", "-f", help=f"auto or one of: {', '.join(FORMATS)}."),
    keep_case: bool = typer.Option(False, "--keep-case", help="Keep name case (default: lowercase names)."),
    languages: Optional[str] = typer.Option(None, help="UMLS: comma-separated LAT codes (default ENG)."),
    vocabularies: Optional[str] = typer.Option(None, help="UMLS: comma-separated source vocabularies (SAB)."),
    semantic_types: Optional[str] = typer.Option(None, help="UMLS: comma-separated semantic type ids (TUI), needs MRSTY."),
    mrdef: Optional[Path] = typer.Option(None, help="UMLS: MRDEF.RRF for definitions."),
    mrsty: Optional[Path] = typer.Option(None, help="UMLS: MRSTY.RRF for semantic types."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT even if it holds files that are not a KB."),
    index: bool = typer.Option(True, "--index/--no-index", help="Also write the TF-IDF name index (for candidates)."),
    ann: bool = typer.Option(False, "--ann", help="Also write an ANN graph of the index, for search='ann' on KBs of "
                             "millions of names (needs usearch: pip install 'spacy-angel[ann]'; minutes per million names)."),
    cores: Optional[int] = typer.Option(None, "--cores", min=1, help="CPU cores for the index: processes of the "
                                        "TF-IDF fit (from 200,000 names on) and threads of the ANN graph (default: all)."),
) -> None:
    """Build a KB directory (names, ids, definitions, types, TF-IDF name index) from one or more sources.

    OUTPUT is written atomically; an existing OUTPUT that is not a KB directory is refused unless
    --overwrite, so a mistyped path never deletes a user's files."""
    split = lambda value: [v.strip() for v in value.split(",") if v.strip()] if value else None  # noqa: E731
    try:
        kb = build_kb(
            sources,  # the files; the UMLS vocabularies are the ``sources=`` option below
            output,
            format=format,
            lowercase=not keep_case,
            overwrite=overwrite,
            index=index,
            ann=ann,
            cores=cores,
            languages=split(languages) or ("ENG",),
            sources=split(vocabularies),
            semantic_types=split(semantic_types),
            mrdef=mrdef,
            mrsty=mrsty,
        )
    except (KBFormatError, ValueError, OSError) as err:
        fail(str(err))
    typer.echo(f"KB with {len(kb.concept_ids)} concepts and {kb.num_names} names written to {output}")


@kb_app.command("info")
def kb_info(kb_path: Path = typer.Argument(..., help="KB directory or file.")) -> None:
    """Print the size of a KB."""
    kb = load_kb_or_fail(kb_path)
    typer.echo(json.dumps({"concepts": len(kb.concept_ids), "names": kb.num_names, "fingerprint": kb.fingerprint()}))


@app.command("init-model")
@writes("output_dir")
def init_model_command(
    kb_path: Path = typer.Argument(..., help="KB directory or file whose names the tokenizer is fitted on."),
    output_dir: Path = typer.Argument(..., help="Directory for the new model + tokenizer."),
    size: str = typer.Option("tiny", help="tiny, small, base or large (BART-large's shape: for speed and memory figures)."),
    corpus: Optional[Path] = typer.Option(None, help="Optional text file (one text per line) to fit the tokenizer on too."),
    seed: int = typer.Option(0, help="Random seed for the weights."),
    vocab_size: Optional[int] = typer.Option(None, help="Tokenizer vocabulary size (default by size)."),
) -> None:
    """Create an untrained BART-style model and a byte-level BPE tokenizer, offline."""
    from spacy_angel.seq2seq.offline_init import SIZES, init_model

    if size not in SIZES:
        fail(Errors.E270.format(size=size, sizes=", ".join(SIZES)))
    kb = load_kb_or_fail(kb_path)
    texts: List[str] = []
    if corpus is not None:
        if not corpus.exists():
            fail(Errors.E271.format(path=corpus))
        data = corpus.read_bytes()
        try:
            texts = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as err:  # name the line, as the KB and corpus readers do
            line = data.count(b"\n", 0, err.start) + 1
            fail(f"{corpus}:{line}: " + Errors.E111.format(byte=data[err.start], offset=err.start))
    from spacy_angel.apps.model_card import kb_summary, render_model_card

    card = render_model_card({  # written inside the new folder before its rename: never a model without its card
        "name": f"untrained spacy-angel model ({size})",
        "stage": "init-model (untrained: train it with `spacy-angel train positive`)",
        "kb": kb_summary(kb),
        "recipe": {"size": size, "seed": seed, "vocab_size": vocab_size, "tokenizer corpus lines": len(texts)},
    })
    try:
        init_model(kb, output_dir, size=size, corpus=texts, seed=seed, vocab_size=vocab_size, card=card)
    except OSError as err:  # OUTPUT_DIR is a file, or a folder of the user's
        fail(str(err))
    typer.echo(f"untrained {size} model written to {output_dir}")


@app.command("link")
@writes("output", "html")
def link_command(
    model_dir: str = typer.Argument(..., help="Model directory (or hub id)."),
    kb_path: Path = typer.Argument(..., help="KB directory or file."),
    input_path: Path = typer.Argument(..., help="JSONL with text + spans, or plain text (one doc per line) with --ner."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL output: one line per mention with ranked candidates."),
    ner: Optional[str] = typer.Option(None, help="spaCy pipeline (name or path) that finds mentions in plain text."),
    num_beams: int = typer.Option(5, help="Beam size."),
    top_k: int = typer.Option(5, help="Candidates per mention."),
    batch_size: int = typer.Option(32, help="Mentions per decoder batch."),
    context_window: int = typer.Option(0, help="Words of context on each side (0: the mention alone, what our recipes train on)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:0, ..."),
    dtype: Optional[str] = typer.Option(None, help="float32 (default); float16 / bfloat16 on a GPU; bfloat16 on a CPU with AVX512-BF16 or AMX (~1.5x faster); int8 on the CPU (dynamic quantisation, ~1.5x faster, links depend on batch mates; docs/performance.md)."),
    mode: str = typer.Option("hybrid", help="hybrid (TF-IDF top names + beam, fused with the model's fusion.json or default weights), beam, or rerank."),
    num_candidates: int = typer.Option(20, help="TF-IDF names per mention in hybrid and rerank modes."),
    search: str = typer.Option("exact", help="How the TF-IDF names are found: exact, pruned, or ann (KBs of millions of names: a graph from `kb build --ann`; needs the [ann] extra)."),
    fusion: Optional[Path] = typer.Option(None, "--fusion", help="Hybrid mode: fusion weights file (from 'train fuse --output'), used instead of MODEL/fusion.json."),
    engine: str = typer.Option("single", help="single (this process) or ray (corpus scale: OUTPUT is a directory of shards; needs the [scale] extra)."),
    address: Optional[str] = typer.Option(None, help="--engine ray: join this Ray cluster (e.g. auto, ray://head:10001); default: start a local Ray."),
    workers: int = typer.Option(1, help="--engine ray: linker actors (each loads the model once and uses one CPU core)."),
    num_gpus_per_worker: float = typer.Option(0.0, help="--engine ray: GPUs per actor (0: CPU; 0.5: two actors share a GPU)."),
    shard_size: int = typer.Option(1000, help="--engine ray: JSONL records per output shard (Parquet: one shard per row group)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write one HTML page (displaCy): each mention with its concept's name and id, linked to the concept's page."),
) -> None:
    """Link mentions and write their candidates (ids, name, probability) as JSONL.

    With --engine ray, INPUT_PATH is a JSONL / Parquet file, a directory or a glob of them, and
    OUTPUT a directory: one shard per input slice, written atomically; a re-run skips the shards
    already written, so a killed job resumes."""
    from spacy_angel.errors import Errors, LinkerError
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.pipeline.factories import make_tfidf_retriever_v2

    if top_k < 1:  # the linker would quietly return one candidate
        fail(Errors.E115.format(option="--top-k", value=top_k))
    try:
        retriever = make_tfidf_retriever_v2(search=search)
    except ValueError as err:
        fail(str(err))
    weights = load_fusion_or_fail(fusion)  # before any work: a bad file is named at once
    if engine == "ray":
        if html is not None:
            fail(Errors.E272)
        _link_with_ray(model_dir, kb_path, str(input_path), output, ner=ner, address=address, workers=workers,
                       num_gpus_per_worker=num_gpus_per_worker, shard_size=shard_size, num_beams=num_beams,
                       top_k=top_k, batch_size=batch_size, context_window=context_window, device=device,
                       dtype=dtype, mode=mode, num_candidates=num_candidates,
                       fusion=weights.to_dict() if weights is not None else None, search=search)
        return
    if engine != "single":
        fail(Errors.E273.format(engine=engine))
    if not input_path.exists():
        fail(Errors.E274.format(path=input_path))
    try:  # before linking, not at the final rename
        check_output_file(output, "--output")
        if html is not None:
            check_output_file(html, "--html")
    except OSError as err:
        fail(str(err))
    try:
        mentions = list(read_link_input(input_path, ner))
    except ValueError as err:
        fail(str(err))
    kb = load_kb_or_fail(kb_path)
    try:
        linker = AngelLinker.from_pretrained(
            model_dir, kb, device=device, dtype=dtype, num_beams=num_beams, batch_size=batch_size,
            context_window=context_window, mode=mode, num_candidates=num_candidates,
            index_dir=kb_path if kb_path.is_dir() else None, fusion=weights, retriever=retriever,
        )
    except (LinkerError, OSError) as err:
        fail(str(err))
    results = linker.link(mentions, top_k=top_k, progress=True)
    with atomic_open(output) as handle:
        for mention, cands in zip(mentions, results):
            handle.write(json.dumps(link_record(mention, cands), ensure_ascii=False) + "\n")
    typer.echo(f"linked {len(mentions)} mentions -> {output}")
    if html is not None:
        _write_link_html(html, mentions, results, kb)
        typer.echo(f"HTML view -> {html}")


def _write_link_html(path: Path, mentions: Sequence[Mention], results: Sequence[Sequence[Candidate]], kb: KnowledgeBase) -> None:
    """One displaCy page, a section per document: mention, concept name (label) and linked id."""
    from spacy_angel.apps.displacy_html import render_mentions, write_html
    from spacy_angel.types import NIL

    groups: dict = {}  # (doc id, text) -> entities, in input order
    for mention, cands in zip(mentions, results):
        if cands:
            kb_id = cands[0].kb_ids[0]
            label = kb.preferred_name(kb_id) or cands[0].name
        else:
            kb_id, label = NIL, NIL
        groups.setdefault((mention.doc_id, mention.text), []).append((mention.start, mention.end, label, kb_id))
    write_html(path, render_mentions([(doc_id, text, ents) for (doc_id, text), ents in groups.items()]))


def _link_with_ray(model_dir: str, kb_path: Path, input_spec: str, output: Path, *, ner: Optional[str], **options: Any) -> None:
    """``link --engine ray``: Ray is imported here only, so the default engine never needs it."""
    if ner is not None:
        fail(Errors.E275)
    if not kb_path.exists():
        fail(Errors.E166.format(path=kb_path))
    try:
        from spacy_angel.apps.ray_linking import link_corpus
        from spacy_angel.errors import ScaleError
    except ImportError as err:
        fail(Errors.E276.format(err=err))
    try:
        report = link_corpus(model_dir, str(kb_path), input_spec, output, **options)
    except (ScaleError, ValueError, OSError) as err:  # a worker's ValueError arrives as a RayTaskError(ValueError)
        fail(str(err).strip().splitlines()[-1] if "RayTaskError" in type(err).__name__ else str(err))
    typer.echo(
        f"linked {report['mentions']} mentions in {len(report['linked'])} shards "
        f"({report['skipped']} of {report['shards']} already done) -> {output}"
    )


CLI_ENTRY_POINTS = "spacy_angel_cli"


TRAIN_HINT = Errors.E277


_plugins_mounted = False


def _cli_entry_points() -> list:
    """Installed entry points of the ``spacy_angel_cli`` group (``name = module:typer_app``)."""
    from importlib.metadata import entry_points

    found = entry_points()
    if hasattr(found, "select"):
        return list(found.select(group=CLI_ENTRY_POINTS))
    return list(found.get(CLI_ENTRY_POINTS, []))  # Python 3.9


def _mount_training() -> None:
    """Mount the sub-commands other packages register in the ``spacy_angel_cli`` entry point group
    (``train`` from the ``[train]`` extra), the way spaCy finds ``spacy_cli`` plugins (once).

    The runtime never imports ``training``: without the entry point, or when it cannot load (TRL
    missing), ``spacy-angel train`` only says how to install the extra.
    """
    global _plugins_mounted
    if _plugins_mounted:
        return
    _plugins_mounted = True
    problems = {}
    for ep in _cli_entry_points():
        try:
            sub_app = ep.load()
        except ImportError as err:
            problems[ep.name] = str(err)
            continue
        app.add_typer(sub_app, name=ep.name)
        problems.pop(ep.name, None)
    mounted = {group.name for group in app.registered_groups}
    if "train" not in mounted:
        reason = f" ({problems['train']})" if "train" in problems else ""

        @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
        def train_unavailable() -> None:
            """Training commands (install with: pip install 'spacy-angel[train]')."""
            fail(TRAIN_HINT + reason)


def get_app() -> typer.Typer:
    """The full app, ``train`` included (what the console script runs; tests use it with CliRunner)."""
    _mount_training()
    return app


def main(argv: Optional[List[str]] = None) -> None:
    # OpenMP's default busy-waiting makes torch crawl as soon as another process shares the
    # cores (measured on the 2-core dev machine, a 7.8M-parameter model training beside another
    # 2-thread job: 2.6 s/step busy-waiting, 1.3 s/step passive). Passive waiting costs next to nothing
    # on an idle machine. Only a default: torch has not been imported yet at this point.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    get_app()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="spacy-angel")


if __name__ == "__main__":
    main()

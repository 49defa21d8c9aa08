"""Corpus-scale linking on Ray Data: a pool of actors links a JSONL / Parquet corpus shard by shard.

Imported only for ``spacy-angel link --engine ray`` (``pip install 'spacy-angel[scale]'``).

Why the driver plans the shards instead of handing the files to Ray's readers: a killed job must
resume, so a shard needs the same identity on every run. Ray Data's blocks depend on its
scheduler and block sizes, and its JSON reader infers one Arrow schema for all records (records the
single-process ``link`` accepts, e.g. ids that are numbers on one line and strings on another,
break it). So each input file is cut into deterministic shards (JSONL: every ``shard_size``
records, found by one cheap pass over the bytes; Parquet: one shard per row group), Ray Data
schedules the shard descriptors onto ``workers`` actors (``map_batches`` with a callable class that
loads the model, KB and trie once), and every actor reads its shard with the same record rules as
the single-process command (:func:`spacy_angel.apps.records.mentions_from_record`) and writes
``OUTPUT/<input stem>-<shard>.jsonl`` through :func:`spacy_angel.fileio.atomic_open` (temp file +
rename). A shard file that exists is therefore complete, and a re-run skips it. An actor that dies
mid-shard (killed, out of memory) is restarted by Ray Data and its shard resubmitted (``map_batches``
actor pools default to ``max_restarts=-1``, ``max_task_retries=-1``); the dead actor's temp file is
removed when the job ends (``tests/apps/test_ray_actor_kill.py``).

Model, KB and corpus paths must be readable by every worker (one machine, or a shared
file system on a cluster), as must ``OUTPUT``.
"""
from __future__ import annotations

import glob
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import ray
import ray.data

from spacy_angel.errors import Errors, ScaleError
from spacy_angel.fileio import atomic_open, atomic_write_json
from spacy_angel.types import Mention

logger = logging.getLogger(__name__)


MANIFEST = "_job.json"


SHARD_SUFFIX = ".jsonl"


JSONL_SUFFIXES = (".jsonl", ".json")


PARQUET_SUFFIXES = (".parquet",)


OBJECT_STORE_BYTES = 128 * 1024 * 1024  # only shard descriptors and per-shard counts travel through it


# One OpenMP/torch thread per actor: N actors on N cores, not N x N threads fighting for them.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class Shard:
    """A deterministic slice of one input file: its output file name depends on nothing else."""

    source: str  # input file
    kind: str  # "jsonl" or "parquet"
    index: int  # shard number within the file
    offset: int  # JSONL: byte offset of the first line; Parquet: the row group
    first_line: int  # 1-based line (JSONL) or row (Parquet) number of the first record
    records: int  # non-blank lines / rows in the shard
    name: str  # output file name inside OUTPUT


# ---------------------------------------------------------------------------- planning (driver)
def input_files(spec: str) -> List[Path]:
    """A file, a directory (its ``*.jsonl`` / ``*.json`` / ``*.parquet`` files) or a glob, sorted."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in JSONL_SUFFIXES + PARQUET_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise ScaleError(Errors.E230.format(spec=spec))
    unknown = [str(p) for p in files if p.suffix not in JSONL_SUFFIXES + PARQUET_SUFFIXES]
    if unknown:
        raise ScaleError(Errors.E231.format(path=unknown[0]))
    stems: Dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise ScaleError(Errors.E232.format(first=stems[p.stem], second=p, stem=p.stem))
        stems[p.stem] = p
    return files


def _jsonl_shards(path: Path, shard_size: int) -> Iterator[Shard]:
    """One pass over the bytes (no JSON parsing): where every ``shard_size``-th non-blank line starts."""
    offset, lineno, count, start, start_line, index = 0, 0, 0, 0, 1, 0
    with path.open("rb") as handle:
        for line in handle:
            lineno += 1
            if line.strip():
                if count == 0:
                    start, start_line = offset, lineno
                count += 1
                if count == shard_size:
                    yield Shard(str(path), "jsonl", index, start, start_line, count, f"{path.stem}-{index:05d}{SHARD_SUFFIX}")
                    index, count = index + 1, 0
            offset += len(line)
    if count or index == 0:  # an empty file still gets its (empty) shard, so it counts as done
        yield Shard(str(path), "jsonl", index, start, start_line, count, f"{path.stem}-{index:05d}{SHARD_SUFFIX}")


def _parquet_shards(path: Path) -> Iterator[Shard]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    first = 1
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        yield Shard(str(path), "parquet", group, group, first, rows, f"{path.stem}-{group:05d}{SHARD_SUFFIX}")
        first += rows


def plan_shards(files: Sequence[Path], shard_size: int) -> List[Shard]:
    """Every shard of ``files``, in input order (JSONL: ``shard_size`` records each; Parquet: row groups)."""
    if shard_size < 1:
        raise ScaleError(Errors.E233.format(value=shard_size))
    shards: List[Shard] = []
    for path in files:
        shards.extend(_parquet_shards(path) if path.suffix in PARQUET_SUFFIXES else _jsonl_shards(path, shard_size))
    return shards


# ---------------------------------------------------------------------------- one shard (worker)
def read_shard(shard: Shard) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line or row number, record)`` for each record of ``shard``; a bad line raises ValueError naming it."""
    if shard.kind == "parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(shard.source).read_row_group(shard.offset).to_pylist()
        yield from enumerate(rows, shard.first_line)
        return
    with open(shard.source, "rb") as raw:
        raw.seek(shard.offset)
        seen = 0
        for lineno, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), shard.first_line):
            if seen == shard.records:
                break
            if not line.strip():
                continue
            seen += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(Errors.E234.format(source=shard.source, line=lineno, err=err.msg)) from None
            if not isinstance(rec, dict):
                raise ValueError(Errors.E235.format(source=shard.source, line=lineno))
            yield lineno, rec


def shard_mentions(shard: Shard) -> List[Mention]:
    """The shard's mentions, read with the single-process ``link`` rules (ids default to the line number)."""
    from spacy_angel.apps.records import mentions_from_record

    mentions: List[Mention] = []
    for lineno, rec in read_shard(shard):
        mentions.extend(mentions_from_record(rec, f"{shard.source}:{lineno}", lineno))
    return mentions


class ShardLinker:
    """Ray Data callable class: loads the linker once per actor, then links and writes whole shards."""

    def __init__(self, model_dir: str, kb_path: str, output_dir: str, settings: Dict[str, Any]) -> None:
        import torch

        from spacy_angel.kb.readers import load_kb
        from spacy_angel.linking.fusion import FusionWeights
        from spacy_angel.linking.linker import AngelLinker
        from spacy_angel.pipeline.factories import make_tfidf_retriever_v2

        torch.set_num_threads(1)  # the actor owns one core (num_cpus=1); see WORKER_ENV
        kb = load_kb(kb_path)  # a KB directory or a KB file, as everywhere
        self.linker = AngelLinker.from_pretrained(
            model_dir, kb, device=settings["device"], dtype=settings.get("dtype"), num_beams=settings["num_beams"],
            batch_size=settings["batch_size"], context_window=settings["context_window"],
            mode=settings.get("mode", "hybrid"), num_candidates=settings.get("num_candidates", 20),
            fusion=FusionWeights.from_dict(settings["fusion"]) if settings.get("fusion") is not None else None,
            retriever=make_tfidf_retriever_v2(search=settings.get("search") or "exact"),
        )
        self.top_k = settings["top_k"]
        self.output_dir = Path(output_dir)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        from spacy_angel.apps.records import link_record

        names, mentions_out, seconds = [], [], []
        for i in range(len(batch["name"])):
            shard = Shard(**{k: _plain(batch[k][i]) for k in Shard.__dataclass_fields__})
            started = time.perf_counter()
            mentions = shard_mentions(shard)
            results = self.linker.link(mentions, top_k=self.top_k)
            with atomic_open(self.output_dir / shard.name) as handle:
                for mention, cands in zip(mentions, results):
                    handle.write(json.dumps(link_record(mention, cands), ensure_ascii=False) + "\n")
            names.append(shard.name)
            mentions_out.append(len(mentions))
            seconds.append(time.perf_counter() - started)
        return {"name": names, "mentions": mentions_out, "seconds": seconds, "worker": [os.getpid()] * len(names)}


def _plain(value: Any) -> Any:
    """NumPy scalars from a Ray batch back to str / int (the Shard fields)."""
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------------------- the job (driver)
def _check_manifest(output_dir: Path, job: Dict[str, Any]) -> None:
    """Refuse to mix shards of two different jobs in one output directory."""
    path = output_dir / MANIFEST
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in job if previous.get(k) != job[k])
        if changed:
            raise ScaleError(Errors.E236.format(path=output_dir, changed=", ".join(changed)))
    else:
        atomic_write_json(path, job)


def _remove_stale_temp_files(output_dir: Path) -> int:
    """Temp files a killed run left behind (``atomic_open`` names them ``.<shard>.<random>.tmp``)."""
    stale = [p for p in output_dir.glob(f".*{SHARD_SUFFIX}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


def _start_ray(address: Optional[str], workers: int) -> bool:
    """Join ``address`` or start a small local Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(
            num_cpus=max(workers, 1),  # one core per actor; the driver only plans and counts
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


def link_corpus(
    model_dir: str,
    kb_path: str,
    input_spec: str,
    output_dir: Path,
    *,
    address: Optional[str] = None,
    workers: int = 1,
    num_gpus_per_worker: float = 0.0,
    shard_size: int = 1000,
    num_beams: int = 5,
    top_k: int = 5,
    batch_size: int = 32,
    context_window: int = 0,
    device: str = "auto",
    dtype: Optional[str] = None,
    progress: bool = True,
    mode: str = "hybrid",
    num_candidates: int = 20,
    fusion: Optional[Dict[str, Any]] = None,
    search: str = "exact",
) -> Dict[str, Any]:
    """Link every shard of ``input_spec`` not yet in ``output_dir``; returns what was done.

    The result has ``shards`` (planned), ``skipped`` (already written by an earlier run),
    ``linked`` (shard names written now), ``mentions`` (linked now), ``seconds`` (wall time) and
    ``busy`` (seconds each actor spent reading, linking and writing shards, by process id: the
    steady-state rate without Ray's and the actors' start-up). ``fusion``: hybrid weights (a
    :meth:`FusionWeights.to_dict`) used instead of the model's ``fusion.json``. ``search``: the TF-IDF
    index's search for hybrid candidates (``exact``, ``pruned`` or ``ann``; see ``tfidf_retriever.v2``).
    """
    if workers < 1:
        raise ScaleError(Errors.E115.format(option="--workers", value=workers))
    if num_gpus_per_worker < 0:
        raise ScaleError(Errors.E237.format(value=num_gpus_per_worker))
    if device.startswith("cuda") and not num_gpus_per_worker:
        raise ScaleError(Errors.E238.format(device=device))
    started = time.perf_counter()
    shards = plan_shards(input_files(input_spec), shard_size)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(num_beams=num_beams, top_k=top_k, batch_size=batch_size, context_window=context_window,
                    mode=mode, num_candidates=num_candidates, device=device if num_gpus_per_worker > 0 or device != "auto" else "cpu", dtype=dtype,
                    fusion=fusion, search=search)
    _check_manifest(output_dir, {
        "model": str(model_dir), "kb": str(kb_path), "shard_size": shard_size, "num_beams": num_beams,
        "top_k": top_k, "context_window": context_window, "mode": mode, "num_candidates": num_candidates, "inputs": sorted({s.source for s in shards}),
        "fusion": fusion,  # None when not given: a manifest written before this key (so without it) still matches
        "search": None if search == "exact" else search,  # likewise
    })
    _remove_stale_temp_files(output_dir)
    todo = [s for s in shards if not (output_dir / s.name).exists()]
    report: Dict[str, Any] = {"shards": len(shards), "skipped": len(shards) - len(todo), "linked": [], "mentions": 0, "busy": {}}
    if todo:
        started_ray = _start_ray(address, workers)
        try:
            _run(todo, model_dir, kb_path, output_dir, settings, workers, num_gpus_per_worker, progress, report)
        finally:
            if started_ray:
                ray.shutdown()
        _remove_stale_temp_files(output_dir)  # an actor killed mid-shard left one; Ray redid its shard
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _run(todo: List[Shard], model_dir: str, kb_path: str, output_dir: Path, settings: Dict[str, Any], workers: int,
         num_gpus_per_worker: float, progress: bool, report: Dict[str, Any]) -> None:
    from tqdm import tqdm

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run notes; errors still surface as exceptions
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar for the whole job, below
    ctx.execution_options.preserve_order = False  # finished shards stream back as soon as they are written
    linked = ray.data.from_items([asdict(s) for s in todo], override_num_blocks=len(todo)).map_batches(
        ShardLinker,
        fn_constructor_kwargs=dict(model_dir=str(Path(model_dir).resolve()) if Path(model_dir).exists() else model_dir,
                                   kb_path=str(Path(kb_path).resolve()), output_dir=str(output_dir.resolve()),
                                   settings=settings),
        batch_size=1,  # a shard is the unit of work, of writing and of resuming
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=num_gpus_per_worker or None,
        runtime_env={"env_vars": WORKER_ENV},
    )
    bar = tqdm(total=len(todo), unit="shard", desc="linking", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for row in linked.iter_rows():
            report["linked"].append(row["name"])
            report["mentions"] += int(row["mentions"])
            worker = int(row["worker"])
            report["busy"][worker] = report["busy"].get(worker, 0.0) + float(row["seconds"])
            bar.update(1)
            bar.set_postfix(mentions=report["mentions"], per_s=f"{report['mentions'] / max(time.perf_counter() - t0, 1e-9):.1f}")
    finally:
        bar.close()

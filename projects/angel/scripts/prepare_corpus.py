"""Turn one benchmark's downloaded assets into the corpus files the training commands read.

Why one script per project rather than per benchmark: every benchmark ships differently
(PubTator files, a zip, one corpus + PMID lists, COMETA's TSV, AskAPatient folds), but the
linker commands read only PubTator / AskAPatient / DocBin (``training.data.corpora.read_corpus``).
This writes, under ``OUT/BENCHMARK/``:

* ``ncbi``, ``bc5cdr``: ``{train,dev,test}.txt`` (PubTator, copied) and ``.spacy`` (DocBin
  for spaCy NER / end-to-end scoring); BC5CDR is first unpacked from ``CDR_Data.zip``;
* ``mm`` (MedMentions ST21pv): ``{train,dev,test}.spacy`` split by the official PMID lists;
* ``cometa``: ``{train,dev,test}.tsv`` in AskAPatient layout (id, name, mention) from the
  COMETA split files (``Specific SNOMED ID``, ``Specific SNOMED Label``, ``Term``);
* ``aap``: ``{train,dev,test}.txt`` copied from one AskAPatient fold.

Usage: python scripts/prepare_corpus.py BENCHMARK --data-dir assets --out corpus [--fold 0]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from pubtator_to_docbin import PubTatorError, convert, read_pmids

SPLITS = ("train", "dev", "test")
LABELS = {"ncbi": "Disease", "mm": "Entity"}  # bc5cdr keeps its Chemical / Disease types


class PrepareError(ValueError):
    pass


def _require(path: Path, hint: str) -> Path:
    if not path.exists():
        raise PrepareError(f"{path} is missing ({hint}); run `spacy project assets` or place it manually")
    return path


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _pubtator(benchmark: str, files: Dict[str, Path], out: Path) -> None:
    for split, src in files.items():
        _require(src, f"{benchmark} {split} split")
        _copy(src, out / f"{split}.txt")
        report = convert(src, out / f"{split}.spacy", label=LABELS.get(benchmark))
        print(f"{benchmark} {split}: {report.to_dict()}")


def prepare_ncbi(data_dir: Path, out: Path) -> None:
    base = data_dir / "ncbi-disease"
    _pubtator(
        "ncbi",
        {
            "train": base / "NCBItrainset_corpus.txt",
            "dev": base / "NCBIdevelopset_corpus.txt",
            "test": base / "NCBItestset_corpus.txt",
        },
        out,
    )


def prepare_bc5cdr(data_dir: Path, out: Path) -> None:
    base = data_dir / "bc5cdr"
    archive = _require(base / "CDR_Data.zip", "BioCreative V CDR corpus")
    with zipfile.ZipFile(archive) as zf:
        wanted = {n for n in zf.namelist() if n.endswith(".PubTator.txt")}
        for name in wanted:
            zf.extract(name, base / "unpacked")
    found = {p.name: p for p in (base / "unpacked").rglob("*.PubTator.txt")}
    files = {
        "train": found.get("CDR_TrainingSet.PubTator.txt"),
        "dev": found.get("CDR_DevelopmentSet.PubTator.txt"),
        "test": found.get("CDR_TestSet.PubTator.txt"),
    }
    missing = [s for s, p in files.items() if p is None]
    if missing:
        raise PrepareError(f"{archive}: no CDR_*Set.PubTator.txt for split(s) {', '.join(missing)}")
    _pubtator("bc5cdr", files, out)  # type: ignore[arg-type]


def prepare_mm(data_dir: Path, out: Path) -> None:
    base = data_dir / "medmentions"
    corpus = _require(base / "corpus_pubtator.txt.gz", "MedMentions st21pv corpus")
    names = {"train": "trng", "dev": "dev", "test": "test"}
    for split in SPLITS:
        pmids = read_pmids(_require(base / f"corpus_pubtator_pmids_{names[split]}.txt", f"MedMentions {split} PMIDs"))
        report = convert(corpus, out / f"{split}.spacy", label=LABELS["mm"], pmids=pmids)
        print(f"mm {split}: {report.to_dict()}")


def cometa_to_askapatient(src: Path, dst: Path, id_field: str = "Specific SNOMED ID",
                          name_field: str = "Specific SNOMED Label", mention_field: str = "Term") -> int:
    """COMETA split (tab-separated with a header) -> ``id<TAB>name<TAB>mention`` lines."""
    rows = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with src.open(encoding="utf-8", newline="") as handle, tmp.open("w", encoding="utf-8") as out:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [f for f in (id_field, name_field, mention_field) if f not in (reader.fieldnames or [])]
        if missing:
            raise PrepareError(f"{src}:1: header lacks column(s) {', '.join(missing)} (found: {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            values = [(row.get(f) or "").replace("\t", " ").strip() for f in (id_field, name_field, mention_field)]
            if not values[0] or not values[2]:
                raise PrepareError(f"{src}:{lineno}: empty field {id_field if not values[0] else mention_field}")
            out.write("\t".join(values) + "\n")
            rows += 1
    tmp.replace(dst)
    return rows


def prepare_cometa(data_dir: Path, out: Path) -> None:
    base = data_dir / "cometa" / "splits" / "stratified_general"
    for split in SPLITS:
        src = _require(base / f"{split}.csv", "COMETA (licence: request it from the authors)")
        print(f"cometa {split}: {cometa_to_askapatient(src, out / f'{split}.tsv')} mentions")


def prepare_aap(data_dir: Path, out: Path, fold: int = 0) -> None:
    base = data_dir / "askapatient"
    names = {"train": "train", "dev": "validation", "test": "test"}
    for split in SPLITS:
        src = _require(base / f"AskAPatient.fold-{fold}.{names[split]}.txt", f"AskAPatient fold {fold}")
        _copy(src, out / f"{split}.txt")


PREPARERS = {"ncbi": prepare_ncbi, "bc5cdr": prepare_bc5cdr, "mm": prepare_mm, "cometa": prepare_cometa}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=sorted([*PREPARERS, "aap"]))
    parser.add_argument("--data-dir", type=Path, default=Path("assets"))
    parser.add_argument("--out", type=Path, default=Path("corpus"))
    parser.add_argument("--fold", type=int, default=0, help="AskAPatient fold (0-9)")
    args = parser.parse_args(argv)
    out = args.out / args.benchmark
    try:
        if args.benchmark == "aap":
            prepare_aap(args.data_dir, out, args.fold)
        else:
            PREPARERS[args.benchmark](args.data_dir, out)
    except (PrepareError, PubTatorError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

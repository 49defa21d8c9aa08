"""Run one command template once per benchmark, filling ``{field}``s from configs/benchmarks.yml.

Why: weasel commands have no loops, and the paper's hyper-parameters (Table B) differ per
benchmark. The template stays visible in project.yml (so ``spacy project run all --dry``
shows the real ``spacy-angel`` calls); this script only substitutes ``{benchmark}``,
``{data_dir}`` and the benchmark's fields, and runs each call through :mod:`timed`
(``metrics/stages/STAGE-BENCHMARK.json``). A benchmark whose table entry lacks a field the
template needs is an error naming the benchmark and field; ``--skip-missing`` skips
benchmarks whose ``requires`` files are absent (licensed data not placed).

Usage: python scripts/for_each.py STAGE --benchmarks ncbi,bc5cdr [--table configs/benchmarks.yml]
       [--data-dir assets] [--skip-missing] -- COMMAND TEMPLATE...
"""
from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from timed import run_timed


class TemplateError(ValueError):
    pass


def load_table(path: Path) -> Dict[str, Dict[str, Any]]:
    import srsly

    table = srsly.read_yaml(path)
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise TemplateError(f"{path}: expected a mapping of benchmark name -> fields")
    return table


def fields_for(table: Dict[str, Dict[str, Any]], benchmark: str, data_dir: str) -> Dict[str, Union[str, List[str]]]:
    """The benchmark's fields (strings, or lists of strings), ``{data_dir}``/``{benchmark}`` filled in."""
    if benchmark not in table:
        raise TemplateError(f"benchmark {benchmark!r} is not in the table (known: {', '.join(sorted(table))})")
    base = {"benchmark": benchmark, "data_dir": data_dir}
    out: Dict[str, Union[str, List[str]]] = dict(base)
    for key, value in table[benchmark].items():
        if isinstance(value, list):
            out[key] = [str(v).format(**base) for v in value]
        else:
            out[key] = str(value).format(**base)
    return out


def fill(template: Sequence[str], fields: Dict[str, Union[str, List[str]]], benchmark: str) -> List[str]:
    """Substitute ``{field}`` in every argument; an argument that is just ``{list_field}``
    becomes one argument per list item (e.g. several KB source files)."""
    out: List[str] = []
    flat = {k: " ".join(v) if isinstance(v, list) else v for k, v in fields.items()}
    for arg in template:
        names = [f for _, f, _, _ in string.Formatter().parse(arg) if f]
        missing = [n for n in names if n not in fields]
        if missing:
            raise TemplateError(f"benchmark {benchmark!r}: field(s) {', '.join(missing)} missing from the table")
        whole = arg[1:-1] if arg.startswith("{") and arg.endswith("}") else None
        if whole in fields and isinstance(fields[whole], list):
            out.extend(fields[whole])  # type: ignore[arg-type]
        else:
            out.append(arg.format(**flat))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: for_each.py STAGE --benchmarks A,B [options] -- COMMAND TEMPLATE", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage")
    parser.add_argument("--benchmarks", required=True, help="comma-separated benchmark names")
    parser.add_argument("--table", type=Path, default=Path("configs/benchmarks.yml"))
    parser.add_argument("--data-dir", default="assets")
    parser.add_argument("--log-dir", type=Path, default=Path("metrics/stages"))
    parser.add_argument("--skip-missing", action="store_true", help="skip benchmarks whose 'requires' files are absent")
    parser.add_argument("--dry", action="store_true", help="print the commands only")
    args = parser.parse_args(argv[:split])
    template = argv[split + 1 :]
    try:
        table = load_table(args.table)
        jobs = []
        for benchmark in [b.strip() for b in args.benchmarks.split(",") if b.strip()]:
            fields = fields_for(table, benchmark, args.data_dir)
            requires = fields.get("requires", [])
            required = [Path(p) for p in (requires if isinstance(requires, list) else requires.split())]
            absent = [str(p) for p in required if not p.exists()]
            if absent and args.skip_missing:
                print(f"[{args.stage}-{benchmark}] skipped: missing {', '.join(absent)}")
                continue
            jobs.append((benchmark, fill(template, fields, benchmark)))
    except TemplateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for benchmark, command in jobs:
        if args.dry:
            print(f"[{args.stage}-{benchmark}] {' '.join(command)}")
            continue
        code = run_timed(f"{args.stage}-{benchmark}", command, args.log_dir)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

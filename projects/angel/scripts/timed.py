"""Run one project stage as a subprocess and record its wall time and peak memory.

Why: the CPU results file reports time and peak RSS per stage, and the stages are separate
processes (``spacy-angel``, ``spacy train``, scripts), so the measurement wraps the process:
``ru_maxrss`` of the waited-for children is the peak resident memory of the stage.

Usage: python scripts/timed.py STAGE [--log-dir metrics/stages] -- COMMAND [ARGS...]
Writes LOG_DIR/STAGE.json ({stage, command, seconds, peak_rss_mb, returncode}) and exits with
the command's exit status.
"""
from __future__ import annotations

import argparse
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from spacy_angel.fileio import atomic_write_json  # light: no spaCy or torch before the timed command


def resolve(command: List[str]) -> List[str]:
    """``python`` -> this interpreter (as weasel does); a console script missing from PATH (e.g.
    ``spacy-angel`` when the virtualenv is not activated) -> the one next to this interpreter."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    if command and shutil.which(command[0]) is None:
        sibling = Path(sys.executable).parent / command[0]
        if sibling.exists():
            return [str(sibling), *command[1:]]
    return list(command)


def run_timed(stage: str, command: List[str], log_dir: Path) -> int:
    """Run ``command``; write ``log_dir/stage.json``; return its exit status."""
    command = resolve(command)
    print(f"[{stage}] {shlex.join(command)}", flush=True)
    started = time.time()
    try:
        returncode = subprocess.call(command)
    except FileNotFoundError:
        print(f"[{stage}] error: command not found: {command[0]}", file=sys.stderr)
        returncode = 127
    seconds = time.time() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over waited children
    peak_mb = peak_kib / (1024 * 1024) if sys.platform == "darwin" else peak_kib / 1024
    record = {
        "stage": stage,
        "command": shlex.join(command),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "returncode": returncode,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(log_dir / f"{stage}.json", record, indent=1)
    print(f"[{stage}] {record['seconds']}s, peak RSS {record['peak_rss_mb']} MiB, exit {returncode}", flush=True)
    return returncode


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: timed.py STAGE [--log-dir DIR] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage")
    parser.add_argument("--log-dir", type=Path, default=Path("metrics/stages"))
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        print("error: no command after --", file=sys.stderr)
        return 2
    return run_timed(args.stage, command, args.log_dir)


if __name__ == "__main__":
    sys.exit(main())

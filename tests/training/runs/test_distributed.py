"""Training under ``accelerate launch``: rank-aware writes (training/runs/distributed.py, used by
training/runs/bookkeeping.py), the accelerate configs of projects/angel, and (slow) the positive and DPO stages
run by two processes to the end, then linking with the result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_CONCEPTS

ACCELERATE_DIR = Path(__file__).resolve().parents[3] / "projects" / "angel" / "configs" / "accelerate"


# ---------------------------------------------------------------------------- helpers
def test_outside_a_launcher_the_process_is_rank_0_of_1(monkeypatch):
    from training.runs import distributed

    for var in ("RANK", "WORLD_SIZE", distributed.ACCUMULATION_ENV):
        monkeypatch.delenv(var, raising=False)
    assert distributed.world_size() == 1 and distributed.is_main_process()
    assert distributed.agree(True) is True and distributed.agree(False) is False
    distributed.wait_for_everyone()  # no process group: nothing to wait for
    assert distributed.accumulation_steps() == 1
    monkeypatch.setenv(distributed.ACCUMULATION_ENV, "16")
    assert distributed.accumulation_steps() == 16
    monkeypatch.setenv(distributed.ACCUMULATION_ENV, "auto")  # accelerate's placeholder: the Trainer's own (1)
    assert distributed.accumulation_steps() == 1


def test_only_the_main_process_touches_the_output(monkeypatch, tmp_path):
    """Rank 1 (as the launcher's environment names it) neither clears checkpoints nor writes the model."""
    from training.runs import bookkeeping as run

    ckpt = tmp_path / "out" / run.CHECKPOINT_DIR
    (ckpt / "stale").mkdir(parents=True)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run.prepare_checkpoints(ckpt, {"data": "x"}, resume=False, error=ValueError) is None
    assert (ckpt / "stale").is_dir() and not (ckpt / run.RUN_CONFIG).exists()
    assert run.finalize_output(None, None, tmp_path / "out", {}, keep_checkpoints=False) == tmp_path / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (ckpt / "stale").is_dir()
    assert run.total_steps(64, batch_size=8, epochs=1, max_steps=-1) == 4  # one step = 8 x 2 processes
    monkeypatch.setenv("RANK", "0")
    run.prepare_checkpoints(ckpt, {"data": "x"}, resume=False, error=ValueError)
    assert not (ckpt / "stale").exists() and (ckpt / run.RUN_CONFIG).exists()


# ---------------------------------------------------------------------------- configs
def _launch_env(config: Path, *extra: str) -> dict:
    """The environment ``accelerate launch`` would give the training processes (no launch)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(config), "--num_processes", "2", *extra, "-m", "spacy_angel.apps.cli", "train", "positive"]
    )
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


def test_deepspeed_zero2_config_is_bf16_zero2_with_accumulation(monkeypatch):
    """Valid for accelerate, and the Trainer reads the same accumulation DeepSpeed gets (else it refuses)."""
    from accelerate.utils import DeepSpeedPlugin

    from training.runs import distributed

    env = _launch_env(ACCELERATE_DIR / "deepspeed_zero2.yaml")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and env[distributed.ACCUMULATION_ENV] == "16"
    assert _launch_env(ACCELERATE_DIR / "deepspeed_zero2.yaml", "--gradient_accumulation_steps", "4")[
        distributed.ACCUMULATION_ENV] == "4"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ds = DeepSpeedPlugin().deepspeed_config  # what DeepSpeed will be given (deepspeed itself not needed)
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_accumulation_steps"] == distributed.accumulation_steps() == 16
    assert ds["train_micro_batch_size_per_gpu"] == "auto"  # filled from --batch-size by the Trainer


def test_ddp_config_is_multi_gpu_bf16():
    env = _launch_env(ACCELERATE_DIR / "ddp.yaml")
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and "ACCELERATE_USE_DEEPSPEED" not in env


# ---------------------------------------------------------------------------- two processes, end to end
def _pubtator() -> str:
    blocks = []
    for n, names in enumerate(TINY_CONCEPTS.values()):
        cid = list(TINY_CONCEPTS)[n]
        title, abstract = f"A study of {names[0]}.", f"Patients with {names[1]} were followed."
        text = title + " " + abstract
        s0, s1 = text.index(names[0]), text.index(names[1], len(title))
        blocks.append("\n".join([
            f"{100 + n}|t|{title}", f"{100 + n}|a|{abstract}",
            f"{100 + n}\t{s0}\t{s0 + len(names[0])}\t{names[0]}\tDisease\t{cid}",
            f"{100 + n}\t{s1}\t{s1 + len(names[1])}\t{names[1]}\tDisease\t{cid}",
        ]))
    return "\n\n".join(blocks) + "\n"


def _pairs() -> str:
    concepts = list(TINY_CONCEPTS.values())
    lines = []
    for i, names in enumerate(concepts):
        text = f"patients with {names[0]} were seen."
        lines.append(json.dumps({"text": text, "start": 14, "end": 14 + len(names[0]), "chosen": names[1],
                                 "rejected": concepts[(i + 1) % len(concepts)][0]}))
    return "\n".join(lines) + "\n"


def _launch(*args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch`` of the spacy-angel CLI in 2 CPU processes (torchrun + gloo).

    Why ``--multi_gpu`` and not ``--cpu``: accelerate's ``--cpu`` launcher starts ONE process unless an
    MPI hostfile is given; ``--multi_gpu`` starts torchrun, and on a machine without CUDA the
    Trainer (``use_cpu``) then joins a gloo process group: the same code path as DDP on GPUs.
    """
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", "0",  # a free port: not torchrun's fixed 29500, which a parallel job may hold
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "spacy_angel.apps.cli", *map(str, args)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.slow
def test_positive_and_dpo_run_under_accelerate_launch_on_two_processes(tmp_path, tiny_model_dir, tiny_kb_dir):
    from spacy_angel.linking.linker import AngelLinker
    from spacy_angel.types import Mention

    train, pairs = tmp_path / "train.txt", tmp_path / "pairs.jsonl"
    train.write_text(_pubtator(), encoding="utf-8")
    pairs.write_text(_pairs(), encoding="utf-8")
    pos, dpo = tmp_path / "pos", tmp_path / "dpo"
    started = time.monotonic()
    _launch("train", "positive", tiny_model_dir, tiny_kb_dir, train, "--output", pos, "--max-steps", 6,
            "--batch-size", 4, "--learning-rate", 3e-3, "--device", "cpu")
    log = json.loads((pos / "training_log.json").read_text())
    examples = log["data"]["train_examples"]
    # two processes: an epoch is examples / (4 x 2) optimiser steps
    assert log["global_step"] == 6
    assert log["train_metrics"]["epoch"] == pytest.approx(6 / -(-examples // 8), abs=0.01)
    _launch("train", "dpo", pos, tiny_kb_dir, pairs, "--output", dpo, "--max-steps", 3, "--batch-size", 2,
            "--device", "cpu")
    log = json.loads((dpo / "training_log.json").read_text())
    assert log["global_step"] == 3 and log["train_metrics"]["epoch"] == pytest.approx(3 / -(-len(TINY_CONCEPTS) // 4), abs=0.01)
    # one writer: no second staging directory, no checkpoints left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpo", "pairs.jsonl", "pos", "train.txt"]
    assert not (pos / "checkpoints").exists() and not (dpo / "checkpoints").exists()

    linker = AngelLinker.from_pretrained(dpo, tiny_kb_dir, device="cpu", num_beams=3)
    text = "The patient has breast cancer."
    [cands] = linker.link([Mention("d", text, 16, 29)], top_k=3)
    assert 1 <= len(cands) <= 3 and all(c.kb_ids for c in cands)
    print(f"accelerate launch, 2 processes: positive + DPO + link in {time.monotonic() - started:.0f}s")

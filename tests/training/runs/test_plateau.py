"""Plateau restarts (training.runs.plateau): a positive run whose first dev evaluation links almost
nothing starts again from the same model at a lower learning rate, exactly as a run started at that
rate would, and a run killed after a restart resumes the attempt it was in."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_mentions_in_context
from training.stages.positive import train_positive
from training.settings import PositiveSettings


pytestmark = pytest.mark.usefixtures("one_torch_thread")

LR = 3e-3
# an unreachable threshold makes every first evaluation "stuck": the restart path runs for sure
STUCK = PositiveSettings(
    max_steps=8, eval_steps=4, batch_size=8, learning_rate=LR, num_beams=2, progress=False, plateau_min_dev_acc1=1.01
)


def _same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _log(path):
    return json.loads((path / "training_log.json").read_text())


def test_a_stuck_run_restarts_at_half_the_rate_and_equals_a_run_started_there(tiny_kb, tiny_model_dir, tmp_path):
    dev = tiny_mentions_in_context()
    out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "restarted", STUCK, dev_mentions=dev)
    log = _log(out)
    assert [(r["step"], r["learning_rate"]) for r in log["plateau_restarts"]] == [(4, LR)]
    assert 0.0 <= log["plateau_restarts"][0]["dev_acc1"] < 1.01
    assert log["learning_rate_used"] == LR / 2 and log["global_step"] == 8  # the last attempt trains to the end
    assert not (out / "plateau_restarts.json").exists() and not (out / "checkpoints").exists()
    direct = train_positive(
        tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "direct", STUCK, dev_mentions=dev, learning_rate=LR / 2, plateau_restarts=0
    )
    assert _log(direct)["plateau_restarts"] == []
    assert _same_weights(out, direct)  # a clean start from the same model and seed, not a continuation


def test_a_run_past_the_threshold_never_restarts(tiny_kb, tiny_model_dir, tmp_path):
    dev = tiny_mentions_in_context()
    out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "a", STUCK, dev_mentions=dev, plateau_min_dev_acc1=0.0)
    off = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "b", STUCK, dev_mentions=dev, plateau_restarts=0)
    assert _log(out)["plateau_restarts"] == [] and _log(out)["learning_rate_used"] == LR
    assert _same_weights(out, off)


def test_a_run_killed_after_a_restart_resumes_that_attempt(tiny_kb, tiny_model_dir, tmp_path, kill_at):
    dev = tiny_mentions_in_context()
    ref = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "ref", STUCK, dev_mentions=dev)
    with pytest.raises(KeyboardInterrupt):  # attempt 1 stops at step 4 (stuck); attempt 2 is killed at 6
        train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", STUCK, dev_mentions=dev, callbacks=[kill_at(6)])
    assert json.loads((tmp_path / "run" / "plateau_restarts.json").read_text())[0]["step"] == 4
    out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", STUCK, dev_mentions=dev)
    log = _log(out)
    assert log["resumed_from"] == "checkpoint-4" and len(log["plateau_restarts"]) == 1 and log["learning_rate_used"] == LR / 2
    assert _same_weights(out, ref)


def test_bad_plateau_settings_are_refused(tiny_kb, tiny_model_dir, tmp_path):
    from spacy_angel.errors import TrainingDataError

    with pytest.raises(TrainingDataError, match="plateau_lr_factor in \\(0, 1\\)"):
        train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "x", STUCK, plateau_lr_factor=1.5)


def test_a_corrupt_restarts_file_is_refused_naming_it(tmp_path):
    from training.runs.plateau import RESTARTS_FILE, read_restarts

    assert read_restarts(tmp_path) == []
    (tmp_path / RESTARTS_FILE).write_text('[{"step": 4', encoding="utf-8")  # cut short by a crash or an editor
    with pytest.raises(ValueError, match=rf"{RESTARTS_FILE}: not valid JSON .*remove it"):
        read_restarts(tmp_path)
    (tmp_path / RESTARTS_FILE).write_text('{"step": 4}', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{RESTARTS_FILE}: expected a list of restarts"):
        read_restarts(tmp_path)
    (tmp_path / RESTARTS_FILE).write_text('[{"step": 4, "learning_rate": 0.001}]', encoding="utf-8")
    assert read_restarts(tmp_path) == [{"step": 4, "learning_rate": 0.001}]

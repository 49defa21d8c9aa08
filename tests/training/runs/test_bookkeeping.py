"""Reproducible budgets (training.runs.bookkeeping, training.settings): a run's length is its step count and
seed, so the same command gives the same weights, and a run cut short and re-run with resume ends
where an uninterrupted one does; the wall-clock cap is only a safety net that says when it cuts."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from training.stages.positive import train_positive
from training.settings import PositiveSettings, PreferenceSettings, resolve

from conftest import tiny_mentions_in_context

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = PositiveSettings(max_steps=24, batch_size=8, learning_rate=3e-3, save_steps=8, progress=False)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _identical(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(tiny_kb, tiny_model_dir, tmp_path):
    a = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "a", SETTINGS)
    b = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "b", SETTINGS)
    assert _identical(_weights(a), _weights(b))
    c = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "c", SETTINGS, seed=1)
    assert not _identical(_weights(a), _weights(c))
    log = json.loads((a / "training_log.json").read_text())
    assert log["global_step"] == log["max_steps"] == 24 and not log["stopped_by_time_budget"]
    assert log["settings"]["max_steps"] == 24 and log["settings"]["seed"] == 0


def test_threads_setting_pins_torch_and_is_logged(tiny_kb, tiny_model_dir, tmp_path):
    """A fixed thread count is what makes a recipe's weights the same on machines with other core
    counts (training.runs.bookkeeping.pin_threads); the run must use it and say so."""
    before = torch.get_num_threads()
    try:
        out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "a", SETTINGS, max_steps=2, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    log = json.loads((out / "training_log.json").read_text())
    assert log["torch_threads"] == 2 and log["settings"]["threads"] == 2
    with pytest.raises(ValueError, match="at least 1"):
        train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "b", SETTINGS, threads=0)


def test_killed_run_resumed_by_the_same_command_ends_with_the_same_weights(tiny_kb, tiny_model_dir, tmp_path, kill_at):
    ref = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "ref", SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", SETTINGS, callbacks=[kill_at(13)])
    out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", SETTINGS)
    log = json.loads((out / "training_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-8" and log["global_step"] == 24
    assert _identical(_weights(out), _weights(ref))


def test_safety_cap_reports_the_cut_and_the_rerun_finishes_the_same_run(tiny_kb, tiny_model_dir, tmp_path, capsys):
    ref = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "ref", SETTINGS)
    capsys.readouterr()
    cut = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", SETTINGS, max_minutes=0.0)
    printed = capsys.readouterr().out
    assert "safety cap of 0 min cut the run at step 1 of 24" in printed
    log = json.loads((cut / "training_log.json").read_text())
    assert log["stopped_by_time_budget"] and log["global_step"] == 1
    assert "cut the run at step 1 of 24" in log["safety_cap"]
    assert (cut / "checkpoints" / "checkpoint-1").is_dir()  # kept, to resume from
    out = train_positive(tiny_model_dir, tiny_kb, tiny_mentions_in_context(), tmp_path / "run", SETTINGS)  # no cap this time
    log = json.loads((out / "training_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-1" and not log["stopped_by_time_budget"] and log["safety_cap"] is None
    assert _identical(_weights(out), _weights(ref))


def test_settings_objects_and_keyword_overrides_are_one_path():
    s = resolve(PositiveSettings, None, {"max_steps": 5})
    assert s == PositiveSettings(max_steps=5)
    assert resolve(PositiveSettings, s, {"seed": 3}) == PositiveSettings(max_steps=5, seed=3)
    assert resolve(PositiveSettings, s, {}) is s
    with pytest.raises(TypeError, match="unknown PositiveSettings setting.*max_step\\b"):
        resolve(PositiveSettings, None, {"max_step": 5})
    with pytest.raises(TypeError, match="expected PreferenceSettings"):
        resolve(PreferenceSettings, s, {})
    # stage defaults differ where the stages do, and live only in the dataclasses
    assert (PositiveSettings().learning_rate, PreferenceSettings().learning_rate) == (3e-4, 5e-5)
    assert PositiveSettings().max_minutes is None and PreferenceSettings().max_minutes is None


def test_cli_options_come_from_the_settings(tiny_kb_dir):
    """Defaults and help texts of `train positive` / `train dpo` are the dataclasses' own."""
    from typer.testing import CliRunner

    from training.cli import app

    runner = CliRunner()
    for command, cls in (("positive", PositiveSettings), ("dpo", PreferenceSettings)):
        result = runner.invoke(app, [command, "--help"], terminal_width=400, env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        for name in ("max_steps", "max_minutes", "learning_rate", "seed", "resume"):
            assert "--" + name.replace("_", "-") in result.output
        assert cls.__dataclass_fields__["max_minutes"].metadata["help"].split(":")[0] in result.output
        assert f"[default: {cls().learning_rate}]" in result.output


def test_a_run_that_links_no_dev_mention_is_flagged():
    from training.runs.bookkeeping import plateau_warning

    stuck = {"best_metric": 0.0, "loss": [{"loss": 8.3}, {"loss": 6.87}]}
    assert "8.30 -> 6.87" in plateau_warning(stuck) and "--learning-rate" in plateau_warning(stuck)
    assert plateau_warning({"best_metric": 0.72, "loss": [{"loss": 8.3}, {"loss": 3.1}]}) is None
    assert plateau_warning({"best_metric": None}) is None  # no dev set: nothing to judge by


def test_checkpoints_to_resume_are_whole_and_before_the_budget(tmp_path):
    """A half-saved checkpoint (no trainer_state.json: the Trainer writes it last) is never resumed, nor
    one at the step budget (the Trainer would train one step more before checking its budget)."""
    from spacy_angel.errors import TrainingDataError
    from training.runs.bookkeeping import RUN_CONFIG, last_checkpoint, prepare_checkpoints

    ckpt = tmp_path / "checkpoints"
    for step, whole in ((1, True), (2, True), (3, False)):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
        if whole:
            (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-x").mkdir()
    (ckpt / RUN_CONFIG).write_text('{"data": "d"}')
    assert last_checkpoint(ckpt) == ckpt / "checkpoint-2"
    assert last_checkpoint(ckpt, below=2) == ckpt / "checkpoint-1"
    assert prepare_checkpoints(ckpt, {"data": "d"}, True, TrainingDataError, budget_steps=5) == ckpt / "checkpoint-2"
    assert prepare_checkpoints(ckpt, {"data": "d"}, True, TrainingDataError, budget_steps=2) == ckpt / "checkpoint-1"
    import shutil

    shutil.rmtree(ckpt / "checkpoint-1")
    assert prepare_checkpoints(ckpt, {"data": "d"}, True, TrainingDataError, budget_steps=2) is None
    assert not any(p.name.startswith("checkpoint-") for p in ckpt.iterdir())  # started over, not mixed

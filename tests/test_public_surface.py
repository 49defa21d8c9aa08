"""The public surface, snapshotted: factory names and config defaults, registered functions, the CLI
commands and their options, and ``spacy_angel.__all__`` (spaCy's ``test_factory_registrations.py``
idea). Moving code between modules must keep it green, so saved pipelines, configs and the README's
commands keep working. Additions are allowed; a removal or a changed default fails.

Refresh after a deliberate addition: ``SPACY_ANGEL_UPDATE_SNAPSHOT=1 pytest tests/test_public_surface.py``.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any, Dict

import typer.main
from spacy.language import Language
from spacy.util import registry

import spacy_angel
from spacy_angel.apps.cli import get_app

SNAPSHOT = Path(__file__).parent / "snapshots" / "public_surface.json"
FACTORIES = ("angel_linker", "angel_abbreviations")


def _default(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _commands(command: Any, prefix: str = "") -> Dict[str, Any]:
    """``"kb build"`` -> [[param name, [its options], its default], ...] for every leaf command."""
    if hasattr(command, "commands"):  # a group (typer may vendor its own click classes)
        out: Dict[str, Any] = {}
        for name, sub in sorted(command.commands.items()):
            out.update(_commands(sub, f"{prefix} {name}".strip()))
        return out
    return {prefix: sorted([p.name, sorted(p.opts), _default(p.default)] for p in command.params)}


def _factory_entry_points() -> Dict[str, Any]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="spacy_factories")}


def public_surface() -> Dict[str, Any]:
    factories = {}
    for name in FACTORIES:
        _factory_entry_points()[name].load()  # as spacy.load finds them: setup.cfg's spacy_factories
        meta = Language.get_factory_meta(name)
        factories[name] = {
            "default_config": json.loads(json.dumps(meta.default_config, default=str)),
            "assigns": list(meta.assigns),
            "requires": list(meta.requires),
        }
    scorers = sorted(n for n in registry.scorers.get_all() if n.startswith("spacy_angel"))
    misc = sorted(n for n in registry.misc.get_all() if n.startswith("spacy_angel"))
    return {
        "all": sorted(spacy_angel.__all__),
        "factories": factories,
        "registered": {"scorers": scorers, "misc": misc},
        "cli": _commands(typer.main.get_command(get_app())),
    }


def _missing(old: Any, new: Any, path: str = "") -> list:
    """What ``old`` has that ``new`` lacks or changed (dict keys may be added, lists may grow)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [m for k, v in old.items() for m in (_missing(v, new[k], f"{path}/{k}") if k in new else [f"{path}/{k} removed"])]
    if isinstance(old, list) and isinstance(new, list) and all(not isinstance(x, (dict, list)) or isinstance(x, list) for x in old):
        have = [json.dumps(x) for x in new]
        return [f"{path}: {x!r} removed or changed" for x in old if json.dumps(x) not in have]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def test_the_public_surface_only_grows():
    surface = public_surface()
    if os.environ.get("SPACY_ANGEL_UPDATE_SNAPSHOT") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(surface, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    old = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert not _missing(old, surface), "public surface changed:\n" + "\n".join(_missing(old, surface))


def test_the_snapshot_check_sees_removals_and_changed_defaults():
    old = {"factories": {"angel_linker": {"default_config": {"top_k": 5}}}, "cli": {"link": [["model", ["--model"]]]}}
    assert not _missing(old, {"factories": {"angel_linker": {"default_config": {"top_k": 5, "new": 1}}}, "cli": {"link": [["model", ["--model"]], ["x", ["-x"]]]}})
    assert _missing(old, {"factories": {"angel_linker": {"default_config": {"top_k": 6}}}, "cli": {"link": [["model", ["--model"]]]}})
    assert _missing(old, {"factories": {"angel_linker": {"default_config": {"top_k": 5}}}, "cli": {"link": [["model", ["-m"]]]}})

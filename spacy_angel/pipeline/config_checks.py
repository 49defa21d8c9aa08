"""Range checks of the ``angel_linker`` config that type annotations cannot express.

Why a room of its own: spaCy's registry validates the factory's types; what is left (ranges,
the linking mode, fusion weights, dtype and device strings) is checked here, once, for both the
factory and direct ``AngelLinkerComponent(...)`` calls, with numbered errors naming the setting.
"""
from __future__ import annotations

import re
from typing import Any, Dict

from spacy_angel.errors import Errors
from spacy_angel.linking.fusion import FusionWeights
from spacy_angel.linking.linker import MODES
from spacy_angel.seq2seq.loading import DTYPE_NAMES

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate_config(cfg: Dict[str, Any]) -> None:
    """Range checks the type annotations cannot express; a numbered error names the setting.

    spaCy's registry already checks the factory's types (``num_beams = "five"`` fails there); this
    catches well-typed but unusable values, also for direct ``AngelLinkerComponent(...)`` calls.
    """

    def fail(field: str, expected: str) -> None:
        raise ValueError(Errors.E100.format(field=field, expected=expected, value=cfg[field]))

    for field in ("num_beams", "top_k", "batch_size"):
        if not isinstance(cfg[field], int) or isinstance(cfg[field], bool) or cfg[field] < 1:
            fail(field, "an integer >= 1")
    window = cfg["context_window"]  # None: the window the model was trained with
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 0):
        fail("context_window", "an integer >= 0, or null for the model's training window")
    threshold = cfg["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        fail("threshold", "a probability in [0, 1]")
    if cfg["mode"] not in MODES:
        fail("mode", " or ".join(repr(m) for m in MODES))
    if not isinstance(cfg["num_candidates"], int) or isinstance(cfg["num_candidates"], bool) or cfg["num_candidates"] < 1:
        fail("num_candidates", "an integer >= 1")
    if cfg["fusion"] is not None:
        try:
            FusionWeights.from_dict(cfg["fusion"], origin="angel_linker: config setting 'fusion'")
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(Errors.E100.format(field="fusion", expected=f"feature weights ({err})", value=cfg["fusion"])) from None
    if cfg["dtype"] == "":
        cfg["dtype"] = None
    if cfg["dtype"] not in DTYPE_NAMES:
        fail("dtype", "null or one of " + ", ".join(d for d in DTYPE_NAMES if d))
    if not isinstance(cfg["device"], str) or not DEVICE_PATTERN.fullmatch(cfg["device"]):
        fail("device", "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    if cfg["top_k"] > cfg["num_beams"]:
        raise ValueError(Errors.E101.format(top_k=cfg["top_k"], num_beams=cfg["num_beams"]))

"""Keep transformers from importing scikit-learn (and with it SciPy and pandas) in the linker.

transformers' generation package imports scikit-learn whenever it is installed, for one thing
only: the adaptive draft-length threshold of assisted generation (``roc_curve``), which the
linker never uses. On the dev machine that import costs ~100 MB of resident memory per process
(``import spacy_angel.linking.linker``: 463 MB with it, 362 MB without; see docs/performance.md).
Importing this module before transformers' generation code turns transformers' scikit-learn
check off; the only effect elsewhere is that assisted generation keeps a fixed threshold.
Set ``SPACY_ANGEL_TRANSFORMERS_SKLEARN=1`` to keep transformers' default. scikit-learn itself
stays usable (``training`` uses it directly, not through transformers).
"""
from __future__ import annotations

import os
import sys


def skip_sklearn_in_transformers() -> bool:
    """Turn transformers' scikit-learn check off unless too late or opted out; True if done."""
    if os.environ.get("SPACY_ANGEL_TRANSFORMERS_SKLEARN") == "1":
        return False
    if "transformers.generation.candidate_generator" in sys.modules:
        return False  # already imported with scikit-learn: nothing to save any more
    try:
        from transformers.utils import import_utils
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    if not hasattr(import_utils, "_sklearn_available"):
        return False  # another transformers layout: leave it alone
    import_utils._sklearn_available = False
    return True


skip_sklearn_in_transformers()

"""The runtime linker does not drag scikit-learn / SciPy / pandas in through transformers."""
import os
import subprocess
import sys

import pytest

PROBE = (
    "import sys, spacy_angel.linking.linker, transformers.generation.candidate_generator as cg; "
    "print(int('sklearn' in sys.modules), int(cg.is_sklearn_available()))"
)


def _probe(env_extra):
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


def test_linker_import_skips_sklearn():
    assert _probe({}) == ["0", "0"]


def test_opt_out_keeps_transformers_default():
    pytest.importorskip("sklearn")
    assert _probe({"SPACY_ANGEL_TRANSFORMERS_SKLEARN": "1"}) == ["1", "1"]

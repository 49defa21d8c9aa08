"""Old entry point of the offline default, kept for ``python -m training.offline_default``.

The code lives in the package :mod:`training.hpo_default` (data, recipe, build, main).
"""
import sys

from training.hpo_default.main import main  # noqa: F401  (the package sets OMP_WAIT_POLICY before torch loads)

if __name__ == "__main__":
    sys.exit(main())

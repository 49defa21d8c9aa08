"""``python -m training.hpo_default``: the main job (``bash scripts/main.sh`` runs it)."""
import sys

from .main import main

sys.exit(main())

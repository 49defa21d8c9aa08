"""``python -m training.hpo_default``: the main job (``bash scripts/main.sh`` runs it)."""
import sys

from training.hpo_default.main import main

sys.exit(main())

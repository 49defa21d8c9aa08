"""``spacy package`` of an assembled pipeline (projects/angel/scripts/assemble.py).

The default test checks what goes into the package (model weights, tokenizer, KB, trie, index
if any), that its config names no path of this machine, and that it requires ``spacy-angel``
(the factory's home). The ``slow`` test builds the wheel with ``python -m spacy package --build
wheel``, installs it into a fresh virtualenv that sees this environment's packages (like
``--system-site-packages``, so torch is not installed again) and checks that ``spacy.load(NAME)``
links exactly as the source pipeline.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import spacy

SCRIPTS = Path(__file__).resolve().parents[2] / "projects" / "angel" / "scripts"
PATTERNS = [{"label": "DISEASE", "pattern": p} for p in ("breast cancer", "migraine", "heart attack")]
TEXTS = ["Women with breast cancer and migraine.", "A heart attack.", "Nothing."]
NAME, VERSION = "angel_tiny", "0.0.1"

PROBE = """
import json, sys, spacy
nlp = spacy.load(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps([[(e.text, e.kb_id_, round(e._.cui_score, 5)) for e in d.ents] for d in nlp.pipe(texts)]))
"""


def annotations(nlp):
    return [[[e.text, e.kb_id_, round(e._.cui_score, 5)] for e in d.ents] for d in nlp.pipe(TEXTS)]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory, tiny_model_dir, tiny_kb_dir) -> Path:
    """NER pipeline (an untrained ``ner`` plus a ruler that sets the entities) + assemble.py."""
    root = tmp_path_factory.mktemp("assembled")
    ner = spacy.blank("en")
    ner.add_pipe("ner").add_label("DISEASE")
    ner.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
    ner.initialize()
    ner.get_pipe("entity_ruler").add_patterns(PATTERNS)
    ner.to_disk(root / "ner")
    sys.path.insert(0, str(SCRIPTS))
    try:
        import assemble
    finally:
        sys.path.remove(str(SCRIPTS))
    code = assemble.main([str(root / "ner"), str(tiny_model_dir), str(tiny_kb_dir), "--output", str(root / "pipeline"),
                          "--device", "cpu", "--no-abbreviations"])
    assert code == 0
    return root / "pipeline"


def _package_dir(out: Path) -> Path:
    return out / f"en_{NAME}-{VERSION}" / f"en_{NAME}" / f"en_{NAME}-{VERSION}"


def test_package_holds_the_linker_files_and_no_machine_paths(assembled, tmp_path, tiny_model_dir, tiny_kb_dir):
    from spacy.cli.package import package
    from thinc.api import Config

    package(assembled, tmp_path, name=NAME, version=VERSION, create_sdist=False, create_wheel=False, force=True)
    data = _package_dir(tmp_path)
    ours = sorted(p.relative_to(assembled).as_posix() for p in (assembled / "angel_linker").rglob("*") if p.is_file())
    packed = sorted(p.relative_to(data).as_posix() for p in (data / "angel_linker").rglob("*") if p.is_file())
    assert packed == ours  # everything the component saved, a name index included when it saves one
    for required in ("angel_linker/cfg", "angel_linker/model/model.safetensors", "angel_linker/model/config.json",
                     "angel_linker/model/tokenizer.json"):
        assert required in packed, required
    in_dir = lambda sub: {Path(p).name for p in packed if p.startswith(f"angel_linker/{sub}/")}  # noqa: E731
    source = {p.name for p in Path(tiny_kb_dir).iterdir() if p.is_file()}  # KB files (+ its TF-IDF index)
    assert source and source <= in_dir("kb") | in_dir("index")
    assert in_dir("trie")
    if json.loads((data / "angel_linker" / "cfg").read_text())["mode"] != "beam":
        assert in_dir("index"), "modes with TF-IDF candidates ship the name index"

    text = (data / "config.cfg").read_text(encoding="utf-8")
    for local in (str(tiny_model_dir), str(tiny_kb_dir), str(assembled), str(Path.home()), "/tmp/"):
        assert local not in text, local
    strings = []

    def walk(node):
        for value in node.values():
            walk(value) if isinstance(value, dict) else strings.append(value)

    walk(Config().from_str(text, interpolate=False))
    assert not [s for s in strings if isinstance(s, str) and os.path.isabs(s)]
    meta = json.loads((tmp_path / f"en_{NAME}-{VERSION}" / "meta.json").read_text())  # what setup.py installs from
    assert any(r.startswith("spacy-angel") for r in meta["requirements"]), meta["requirements"]
    # the packaged data loads and links as the source
    assert annotations(spacy.load(data)) == annotations(spacy.load(assembled))


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_links_the_same(assembled, tmp_path):
    pytest.importorskip("build", reason="spacy package --build wheel needs the 'build' package")
    out = tmp_path / "packages"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "spacy", "package", str(assembled), str(out), "--name", NAME,
                    "--version", VERSION, "--build", "wheel", "--force"], check=True, capture_output=True, timeout=900)
    (wheel,) = (out / f"en_{NAME}-{VERSION}" / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # see this environment's packages (torch, spacy, spacy-angel) as --system-site-packages would
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(fresh_site, "_outer_env.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=600)
    probe = subprocess.run([str(python), "-c", PROBE, f"en_{NAME}", json.dumps(TEXTS)], capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == annotations(spacy.load(assembled))
    installed = subprocess.run([str(python), "-c", f"import en_{NAME}, sys; print(en_{NAME}.__file__)"],
                               capture_output=True, text=True, check=True).stdout
    assert installed.startswith(str(venv))  # the wheel's copy, not the source directory

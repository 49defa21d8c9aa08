"""The spaCy (weasel) project in projects/angel: it parses, its workflows list every stage, every
command it runs exists with the options it passes, and its helper scripts compute right.

The project is copied to a temp dir first (weasel creates the ``directories`` it declares).
"""
from __future__ import annotations

import importlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

PROJECT = Path(__file__).resolve().parents[2] / "projects" / "angel"
SCRIPTS = PROJECT / "scripts"
GPU_STAGES = [
    "build-kb", "pretrain-data", "pretrain-positive", "pretrain-dpo", "finetune-positive", "mine",
    "finetune-dpo", "evaluate", "train-ner", "assemble", "package",
]

TINY_PUBTATOR = """\
100|t|Breast and ovarian cancers in BRCA1 carriers.
100|a|Hereditary breast cancer is common. Cystic fibrosis is not.
100\t0\t26\tBreast and ovarian cancers\tCompositeMention\tD001943|D010051
100\t46\t70\tHereditary breast cancer\tSpecificDisease\tD061325
100\t82\t97\tCystic fibrosis\tSpecificDisease\t D003550
100\tCID\tD000001\tD003550

200|t|Myocardial infarction after surgery
200|a|No other disease.
200\t0\t21\tMyocardial infarction\tSpecificDisease\tMESH:D009203

300|t|A title without entities.
300|a|Nothing to annotate here.

"""


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("project") / "angel"
    dest.mkdir()
    shutil.copy(PROJECT / "project.yml", dest / "project.yml")
    shutil.copytree(PROJECT / "configs", dest / "configs")
    shutil.copytree(SCRIPTS, dest / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def config(project_copy) -> dict:
    from weasel.util.config import load_project_config

    return load_project_config(project_copy)


@pytest.fixture(scope="module")
def scripts():
    """The project's scripts as importable modules (they import each other by bare name)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield {name: importlib.import_module(name) for name in ("pubtator_to_docbin", "e2e_score", "for_each", "timed", "report", "seen_split", "hold_out_texts")}
    finally:
        sys.path.remove(str(SCRIPTS))


def _commands(config: dict) -> Dict[str, dict]:
    return {c["name"]: c for c in config["commands"]}


# ---------------------------------------------------------------------------- project.yml
def test_project_parses_with_both_profiles(config):
    assert {"all", "cpu-ncbi"} <= set(config["workflows"])
    assert config["vars"]["gpu"]["base_model"] == "GanjinZero/biobart-v2-large"
    assert config["vars"]["cpu"]["size"] in ("tiny", "small")
    commands = _commands(config)
    for workflow in config["workflows"].values():
        for name in workflow:
            assert name in commands, f"workflow step {name} is not a command"
    assert set(GPU_STAGES) <= set(config["workflows"]["all"])
    # the CPU workflow runs its own commands, never the GPU ones
    assert all(name.startswith("cpu-") for name in config["workflows"]["cpu-ncbi"])


def test_vars_overrides_reach_nested_profile_values(project_copy):
    from weasel.util.config import load_project_config

    cfg = load_project_config(project_copy, overrides={"vars.cpu.positive_minutes": 1.5, "vars.data_dir": "/data"})
    script = " ".join(_commands(cfg)["cpu-finetune-positive"]["script"])
    assert "--max-minutes 1.5" in script
    assert "/data/biosyn/ncbi-disease/dev_dictionary.txt" in " ".join(_commands(cfg)["cpu-build-kb"]["script"])


@pytest.mark.parametrize("workflow", ["all", "cpu-ncbi"])
def test_dry_run_lists_every_command(project_copy, config, capsys, workflow):
    from weasel.cli.run import project_run

    project_run(project_copy, workflow, dry=True)
    out = capsys.readouterr().out
    commands = _commands(config)
    for name in config["workflows"][workflow]:
        assert f" {name} " in out, f"--dry of {workflow} does not show {name}"
        for line in commands[name]["script"]:
            first = shlex.split(line)[0]
            assert first in out or first == "python"
    assert out.count("Running command:") == sum(len(commands[n]["script"]) for n in config["workflows"][workflow])


def _inner_commands(tokens: List[str]) -> List[List[str]]:
    """The command itself plus any wrapped after ``--`` by timed.py / for_each.py or run by
    ``accelerate launch`` (parsed by accelerate itself, so its options are checked too)."""
    out = [tokens]
    if "--" in tokens and any(t.endswith(("timed.py", "for_each.py")) for t in tokens[:3]):
        out += _inner_commands(tokens[tokens.index("--") + 1 :])
    elif tokens[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        args = launch_command_parser().parse_args(tokens[2:])
        assert (PROJECT / args.config_file).is_file(), f"accelerate config {args.config_file} is missing"
        if args.module:
            assert args.training_script == "spacy_angel.apps.cli", args.training_script
            out += _inner_commands(["spacy-angel", *args.training_script_args])
        else:
            out += _inner_commands(["python", args.training_script, *args.training_script_args])
    return out


def test_all_workflow_trains_through_accelerate(project_copy, capsys):
    """Pre-training through DeepSpeed ZeRO-2, fine-tuning through DDP, on ``vars.gpu.num_gpus`` processes."""
    from weasel.cli.run import project_run

    project_run(project_copy, "all", dry=True, overrides={"vars.gpu.num_gpus": 4})
    out = capsys.readouterr().out
    zero2 = "accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 4"
    ddp = "accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 -m spacy_angel.apps.cli"
    assert f"{zero2} --gradient_accumulation_steps 16 scripts/pretrain_positive.py" in out
    assert f"{zero2} --gradient_accumulation_steps 1 -m spacy_angel.apps.cli train dpo" in out
    assert f"-- {ddp} train positive" in out and f"-- {ddp} train dpo" in out
    assert out.count("accelerate launch") == 4


def _script_help(path: Path) -> str:
    result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert result.returncode == 0, f"{path.name} --help failed: {result.stderr[-500:]}"
    assert not (PROJECT / "--help").exists(), f"{path.name} took --help for an output path and wrote it"
    return result.stdout


def test_every_command_exists_with_its_options(config):
    import typer

    from spacy_angel.apps.cli import get_app

    root = typer.main.get_command(get_app())
    helps: Dict[str, str] = {}
    checked = 0
    for command in config["commands"]:
        for line in command["script"]:
            for tokens in _inner_commands(shlex.split(line)):
                if tokens[0] == "spacy-angel":
                    group, i = root, 1
                    while hasattr(group, "commands"):  # a command group (typer vendors its own click)
                        sub = group.commands.get(tokens[i])
                        assert sub is not None, f"{command['name']}: `spacy-angel {' '.join(tokens[1:i + 1])}` does not exist"
                        group, i = sub, i + 1
                    known = {opt for p in group.params for opt in p.opts + p.secondary_opts}
                    for tok in tokens[i:]:
                        if tok.startswith("--"):
                            assert tok in known, f"{command['name']}: `spacy-angel {' '.join(tokens[1:i])}` has no option {tok}"
                    checked += 1
                elif tokens[0] == "python" and tokens[1].startswith("scripts/"):
                    path = PROJECT / tokens[1]
                    assert path.is_file(), f"{command['name']}: {path} is missing"
                    if path.name in ("timed.py", "for_each.py"):
                        continue
                    helps.setdefault(path.name, _script_help(path))
                    for tok in tokens[2:]:
                        if tok.startswith("--"):
                            assert tok in helps[path.name], f"{command['name']}: {path.name} has no option {tok}"
                    checked += 1
                elif tokens[:3] == ["python", "-m", "spacy"]:
                    assert tokens[3] in ("train", "package")
                    if tokens[3] == "train":
                        assert (PROJECT / tokens[4].replace("${vars.", "")).exists() or (PROJECT / tokens[4]).exists()
    assert checked > 20


def test_benchmark_table_fills_every_template(config, scripts, tmp_path):
    """Every for_each template gets all its fields from configs/benchmarks.yml, for every benchmark."""
    fe = scripts["for_each"]
    table = fe.load_table(PROJECT / "configs" / "benchmarks.yml")
    benchmarks = config["vars"]["gpu"]["benchmarks"].split(",")
    assert set(benchmarks) <= set(table)
    n = 0
    for command in config["commands"]:
        for line in command["script"]:
            tokens = shlex.split(line)
            if len(tokens) > 1 and tokens[1] == "scripts/for_each.py":
                template = tokens[tokens.index("--") + 1 :]
                for b in benchmarks:
                    filled = fe.fill(template, fe.fields_for(table, b, "DATA"), b)
                    assert not any("{" in t for t in filled), filled
                    n += 1
    assert n >= 5 * 8
    # list fields expand to several arguments
    kb = fe.fill(["kb", "build", "{kb_sources}", "{kb_args}"], fe.fields_for(table, "bc5cdr", "D"), "bc5cdr")
    assert kb[2:] == ["D/ctd/CTD_diseases.tsv.gz", "D/ctd/CTD_chemicals.tsv.gz", "--format", "medic"]
    with pytest.raises(fe.TemplateError, match="nope"):
        fe.fill(["{nope}"], fe.fields_for(table, "ncbi", "D"), "ncbi")


def test_assets_have_sources_or_placement_instructions(config):
    for asset in config["assets"]:
        assert asset.get("url") or "place manually" in asset.get("description", ""), asset["dest"]
    dests = " ".join(a["dest"] for a in config["assets"])
    for name in ("ncbi-disease", "bc5cdr", "medic", "askapatient", "cometa", "medmentions", "MRCONSO.RRF"):
        assert name in dests


def test_pinned_asset_checksums_match_shared_data(config, shared_data):
    """Checksums in project.yml are those of the files in the shared data copy (when present)."""
    from weasel.util.hashing import get_checksum

    shared = shared_data.root
    pinned = [a for a in config["assets"] if a.get("checksum")]
    assert len(pinned) >= 6
    present = 0
    for asset in pinned:
        local = shared / asset["dest"].split("assets/", 1)[1]
        if local.exists():
            assert get_checksum(local) == asset["checksum"], asset["dest"]
            present += 1
    if not present:
        pytest.skip("shared data copy not available")


# ---------------------------------------------------------------------------- converter
def test_pubtator_to_docbin_keeps_gold_spans_and_ids(scripts, tmp_path):
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from training.data.corpora import read_docbin, read_pubtator

    conv = scripts["pubtator_to_docbin"]
    src = tmp_path / "tiny.txt"
    src.write_text(TINY_PUBTATOR, encoding="utf-8")
    out = tmp_path / "tiny.spacy"
    report = conv.convert(src, out, label="Disease")
    assert report.documents == 3 and report.annotations == 4 and report.entities == 4
    docs = list(DocBin().from_disk(out).get_docs(Vocab()))
    assert [d.user_data["doc_id"] for d in docs] == ["100", "200", "300"]
    ents = [(e.text, e.label_, e.kb_id_) for e in docs[0].ents]
    assert ents == [
        ("Breast and ovarian cancers", "Disease", "D001943|D010051"),
        ("Hereditary breast cancer", "Disease", "D061325"),
        ("Cystic fibrosis", "Disease", "D003550"),
    ]
    assert docs[2].ents == ()
    # the linker's reader sees exactly the mentions read_pubtator finds in the original file
    from_docbin = [(m.doc_id, m.start, m.end, m.gold_ids) for m in read_docbin(out)]
    from_pubtator = [(m.doc_id, m.start, m.end, m.gold_ids) for m in read_pubtator(src)]
    assert from_docbin == from_pubtator
    # type filter + pmid filter
    report = conv.convert(src, tmp_path / "f.spacy", types={"CompositeMention"}, pmids={"100"})
    assert (report.documents, report.entities, report.filtered_type) == (1, 1, 2)


def test_pubtator_to_docbin_names_file_and_line_of_bad_offsets(scripts, tmp_path):
    conv = scripts["pubtator_to_docbin"]
    bad = tmp_path / "bad.txt"
    bad.write_text("1|t|Short title\n1|a|x\n1\t0\t5\tTitle\tDisease\tD1\n", encoding="utf-8")
    with pytest.raises(conv.PubTatorError, match=r"bad.txt:3: \[E314\] text\[0:5\] is 'Short'"):
        conv.convert(bad, tmp_path / "o.spacy")
    assert conv.main([str(bad), str(tmp_path / "o.spacy")]) == 1


# ---------------------------------------------------------------------------- e2e scorer
def test_e2e_score_counts_span_and_id_matches(scripts):
    e2e = scripts["e2e_score"]
    gold = [[(0, 10, {"D1"}), (20, 30, {"D2", "D3"})], [(5, 9, {"D4"})]]
    pred = [[(0, 10, "D1"), (20, 30, "D9"), (40, 45, "D5")], [(5, 9, None)]]
    s = e2e.score(gold, pred)
    assert s["ner"]["tp"] == 3 and s["ner"]["precision"] == 0.75 and s["ner"]["recall"] == 1.0
    assert s["e2e"]["tp"] == 1 and s["e2e"]["precision"] == 0.25 and s["e2e"]["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["e2e"]["f1"] == pytest.approx(2 * 0.25 * (1 / 3) / (0.25 + 1 / 3), abs=1e-4)
    assert s["linking_on_found"] == {"accuracy": pytest.approx(1 / 3, abs=1e-4), "n": 3}
    # a composite gold span accepts any of its ids; canonical ids make aliases equal
    s = e2e.score([[(0, 4, {"D3"})]], [[(0, 4, "OMIM:1")]], canonical=lambda i: {"OMIM:1": "D3"}.get(i, i))
    assert s["e2e"]["f1"] == 1.0
    with pytest.raises(ValueError, match="2 gold documents but 1"):
        e2e.score([[], []], [[]])


def test_e2e_score_docs_on_converted_gold(scripts, tmp_path):
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from spacy_angel.pipeline.linker_component import install_extensions

    install_extensions()
    conv, e2e = scripts["pubtator_to_docbin"], scripts["e2e_score"]
    src = tmp_path / "tiny.txt"
    src.write_text(TINY_PUBTATOR, encoding="utf-8")
    conv.convert(src, tmp_path / "g.spacy", label="Disease")
    vocab = Vocab()
    gold = list(DocBin().from_disk(tmp_path / "g.spacy").get_docs(vocab))
    pred = list(DocBin().from_disk(tmp_path / "g.spacy").get_docs(vocab))
    answers = {"Breast and ovarian cancers": "D010051", "Hereditary breast cancer": "D000001", "Cystic fibrosis": "D003550",
               "Myocardial infarction": "D009203"}
    for doc in pred:
        for ent in doc.ents:
            ent._.cui = answers[ent.text]
    pred[1].ents = []  # the NER missed "Myocardial infarction"
    s = e2e.score_docs(gold, pred)
    assert s["ner"]["tp"] == 3 and s["ner"]["recall"] == 0.75 and s["ner"]["precision"] == 1.0
    assert s["e2e"]["tp"] == 2 and s["e2e"]["recall"] == 0.5


# ---------------------------------------------------------------------------- timing + report
def test_timed_records_time_memory_and_exit_status(scripts, tmp_path):
    timed = scripts["timed"]
    code = timed.run_timed("ok-stage", ["python", "-c", "x = bytearray(60_000_000); print(len(x))"], tmp_path)
    rec = json.loads((tmp_path / "ok-stage.json").read_text())
    assert code == 0 and rec["returncode"] == 0 and rec["seconds"] >= 0
    assert rec["peak_rss_mb"] > 55  # the child's 60 MB buffer
    assert timed.run_timed("bad", ["python", "-c", "raise SystemExit(3)"], tmp_path) == 3
    assert json.loads((tmp_path / "bad.json").read_text())["returncode"] == 3


def test_report_collects_results_file(scripts, tmp_path):
    rep = scripts["report"]

    def write(name: str, acc1: float, acc5: float) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"summary": {"acc@1": acc1, "acc@5": acc5, "n": 10, "acc@1_ci95": [0.1, 0.9]}}))
        return path

    stages = tmp_path / "stages"
    stages.mkdir()
    (stages / "cpu-a.json").write_text(json.dumps({"stage": "cpu-a", "seconds": 10.0, "peak_rss_mb": 100.0, "returncode": 0}))
    (stages / "cpu-b.json").write_text(json.dumps({"stage": "cpu-b", "seconds": 5.5, "peak_rss_mb": 300.0, "returncode": 0}))
    (stages / "gpu-x.json").write_text(json.dumps({"stage": "gpu-x", "seconds": 99.0, "peak_rss_mb": 1.0}))
    (stages / "cpu-aap-c.json").write_text(json.dumps({"stage": "cpu-aap-c", "seconds": 7.0, "peak_rss_mb": 900.0}))
    e2e = tmp_path / "e2e.json"
    e2e.write_text(json.dumps({"ner": {"precision": 0.8, "recall": 0.7, "f1": 0.75}, "e2e": {"precision": 0.6, "recall": 0.5, "f1": 0.55}}))
    out = tmp_path / "results" / "ncbi-cpu.json"
    args = ["--tfidf", str(write("t", 0.5, 0.6)), "--positive", str(write("p", 0.7, 0.8)), "--angel", str(write("a", 0.75, 0.85)),
            "--e2e", str(e2e), "--stages", str(stages), "--prefix", "cpu-", "--exclude-prefix", "cpu-aap-", "--output", str(out)]
    assert rep.main(args) == 0
    result = json.loads(out.read_text())
    for key in ("tfidf_acc1", "tfidf_acc5", "positive_acc1", "positive_acc5", "angel_acc1", "angel_acc5",
                "e2e_precision", "e2e_recall", "e2e_f1"):
        assert key in result
    assert (result["angel_acc1"], result["e2e_f1"], result["ner_f1"]) == (0.75, 0.55, 0.75)
    assert set(result["stages"]) == {"cpu-a", "cpu-b"}
    assert result["total_seconds"] == 15.5 and result["peak_rss_mb"] == 300.0
    # without --exclude-prefix, `cpu-` also takes the AskAPatient workflow's `cpu-aap-` records
    assert rep.main([a for a in args if a not in ("--exclude-prefix", "cpu-aap-")]) == 0
    assert set(json.loads(out.read_text())["stages"]) == {"cpu-a", "cpu-aap-c", "cpu-b"}
    with pytest.raises(SystemExit, match="summary.acc@1 missing"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        rep.main(args[:1] + [str(bad)] + args[2:])


def test_report_states_angel_minus_positive_from_the_paired_test(scripts, tmp_path):
    rep = scripts["report"]
    reports = []
    for name, acc in (("t", 0.5), ("p", 0.7), ("a", 0.75)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"summary": {"acc@1": acc, "acc@5": acc, "n": 4}}))
        reports.append(str(path))
    compare = tmp_path / "compare.json"  # `train compare POSITIVE ANGEL`: diff = positive - angel
    compare.write_text(json.dumps({"diff": -0.05, "diff_ci95": [-0.09, -0.01], "p_value": 0.02, "mcnemar_p": 0.03,
                                   "a_only_correct": 1, "b_only_correct": 6}))
    out = tmp_path / "r.json"
    args = ["--tfidf", reports[0], "--positive", reports[1], "--angel", reports[2], "--compare", str(compare),
            "--stages", str(tmp_path / "none"), "--output", str(out)]
    assert rep.main(args) == 0
    result = json.loads(out.read_text())
    assert result["angel_vs_positive"] == pytest.approx(0.05)
    assert result["angel_vs_positive_ci"] == pytest.approx([0.01, 0.09])
    assert (result["angel_vs_positive_p"], result["angel_vs_positive_p_mcnemar"]) == (0.02, 0.03)
    assert (result["only_angel_correct"], result["only_positive_correct"]) == (6, 1)
    # one key per fact: no second spelling of the same difference
    assert not [k for k in result if k.startswith("angel_minus_positive") or k.endswith("_p_bootstrap")]
    # the same comparison given twice (as cpu-report does) is fine; a different one under the same name is not
    assert rep.main(args + ["--diff", f"angel_vs_positive={compare}"]) == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"diff": 0.01, "diff_ci95": [-0.02, 0.04], "p_value": 0.5}))
    with pytest.raises(SystemExit, match="angel_vs_positive.* already set"):
        rep.main(args + ["--diff", f"angel_vs_positive={other}"])
    compare.write_text(json.dumps({"n": 3}))
    with pytest.raises(SystemExit, match="field diff missing"):
        rep.main(args)


def test_unpack_biosyn_unpacks_once_and_explains_a_missing_archive(tmp_path):
    """`cpu-ncbi` starts with the BioSyn archive unpacked (weasel downloads it but does not unpack it)."""
    import subprocess
    import tarfile

    src = tmp_path / "src" / "ncbi-disease" / "processed_test"
    src.mkdir(parents=True)
    (src / "0.concept").write_text("0||0|3|disease|D000001|x\n", encoding="utf-8")
    archive = tmp_path / "biosyn" / "ncbi-disease.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "ncbi-disease", arcname="ncbi-disease")
    cmd = [sys.executable, str(SCRIPTS / "unpack_biosyn.py"), str(archive), "--into", str(archive.parent)]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0 and (archive.parent / "ncbi-disease" / "processed_test" / "0.concept").is_file()
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 0 and "already unpacked" in second.stdout
    missing = subprocess.run([sys.executable, str(SCRIPTS / "unpack_biosyn.py"), str(tmp_path / "none.tar.gz"),
                              "--into", str(tmp_path / "empty")], capture_output=True, text=True)
    assert missing.returncode == 1 and "spacy project assets" in missing.stderr


def test_seen_split_separates_test_texts_read_in_training(scripts, tmp_path):
    split = scripts["seen_split"]
    train = tmp_path / "train.txt"
    train.write_text("C1\tHeadache\thead  ache\nC2\tInsomnia\tcan't sleep\n", encoding="utf-8")

    def report(name: str, right: list) -> Path:
        texts = ["Head ache", "no sleep at all", "can't sleep", "sore knee"]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"mentions": [{"mention": t, "correct@1": r} for t, r in zip(texts, right)]}))
        return path

    base, row = report("base", [True, False, True, False]), report("row", [False, True, True, True])
    out = tmp_path / "split.json"
    assert split.main([str(train), "--corpus-format", "askapatient", "--report", f"pos={base}", "--report", f"angel={row}",
                       "--diff", "angel:pos", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # "Head ache" matches "head  ache" once case and spaces are normalised
    assert (result["n_seen"], result["n_unseen"]) == (2, 2)
    assert result["reports"]["pos"]["seen_acc1"] == 1.0 and result["reports"]["pos"]["unseen_acc1"] == 0.0
    assert result["diffs"]["angel-pos"] == {"acc1": 0.25, "seen_acc1": -0.5, "unseen_acc1": 1.0}
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"mentions": [{"mention": "x", "correct@1": True}] * 4}))
    with pytest.raises(SystemExit, match=r"mentions\[0\] is 'x'"):
        split.main([str(train), "--corpus-format", "askapatient", "--report", f"pos={base}", "--report", f"o={other}", "--output", str(out)])
    with pytest.raises(SystemExit, match="no --report named 'nope'"):
        split.main([str(train), "--corpus-format", "askapatient", "--report", f"pos={base}", "--diff", "nope:pos", "--output", str(out)])
    # --held-out: the seen mentions split once more into the part of TRAIN a hold-out model did not read and the rest
    held = tmp_path / "held.txt"
    held.write_text("C2\tInsomnia\tCan't  sleep\n", encoding="utf-8")
    assert split.main([str(train), "--corpus-format", "askapatient", "--report", f"pos={base}", "--report", f"angel={row}",
                       "--diff", "angel:pos", "--held-out", str(held), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["n_seen"], result["n_held"], result["n_read"], result["n_unseen"]) == (2, 1, 1, 2)
    assert result["reports"]["angel"]["held_acc1"] == 1.0 and result["reports"]["angel"]["read_acc1"] == 0.0
    assert result["diffs"]["angel-pos"]["held_acc1"] == 0.0 and result["diffs"]["angel-pos"]["read_acc1"] == -1.0
    held.write_text("C9\tRash\tred spots\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"held.txt: 1 texts are not in"):
        split.main([str(train), "--corpus-format", "askapatient", "--report", f"pos={base}", "--held-out", str(held), "--output", str(out)])


def test_hold_out_texts_splits_records_by_text_as_crossfit_folds_them(scripts, tmp_path):
    from training.data.corpora import read_askapatient
    from training.stages.crossfit import fold_unit, unit_folds

    train = tmp_path / "train.txt"
    rows = [b"C1\tHeadache\thead  ache\n", b"C1\tHeadache\tHead ache\n", b"C2\tInsomnia\tcan't sleep\n",
            b"C3\tNausea\tfelt sick\n", b"C3\tNausea\tFelt  Sick\n", b"C4\tPain\tsore kn\xe9e\n",
            b"C5\tRash\tred spots\n", b"C6\tFatigue\ttired all day\n"]
    train.write_bytes(b"".join(rows))  # not UTF-8 (0xe9): decoded as latin-1, copied byte for byte
    rest, held = tmp_path / "rest.txt", tmp_path / "held.txt"
    assert scripts["hold_out_texts"].main([str(train), "--folds", "2", "--fold", "1", "--rest", str(rest), "--held", str(held)]) == 0
    rest_rows, held_rows = rest.read_bytes().splitlines(keepends=True), held.read_bytes().splitlines(keepends=True)
    assert sorted(rest_rows + held_rows) == sorted(rows) and rest_rows and held_rows
    # the same folds as `train crossfit --fold-by surface` gives the records read by the corpus reader
    mentions = read_askapatient(train)
    fold_of = unit_folds(mentions, 2, 0, "surface")
    expected_held = [m.surface for m in mentions if fold_of[fold_unit(m, "surface")] == 1]
    assert [m.surface for m in read_askapatient(held)] == expected_held
    # every record of one text is on one side, whatever its case and spacing
    texts = lambda path: {" ".join(m.surface.lower().split()) for m in read_askapatient(path)}  # noqa: E731
    assert not texts(rest) & texts(held)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(rows[0] + b"C2\tonly two columns\n")
    with pytest.raises(SystemExit, match=r"bad.txt, line 2"):
        scripts["hold_out_texts"].main([str(bad), "--folds", "2", "--rest", str(rest), "--held", str(held)])

#!/usr/bin/env bash
# GPU smoke test: every stage of projects/angel's `all` workflow on tiny data with tiny budgets,
# KB pre-training through the DeepSpeed ZeRO-2 accelerate config, fine-tuning through DDP, a bf16
# linking throughput figure, and `link --engine ray` on the GPU. Meant to finish in under 8 minutes
# on one GPU.
#
# NOT RUN BY CI, AND NEVER RUN YET: it was written in a session without a GPU, so neither the
# 8-minute figure nor the script itself has been checked on a GPU. Run it by hand on a CUDA machine.
#
# Usage: bash scripts/gpu_smoke.sh [WORK_DIR]          (default: a new temp dir; the repo is not touched)
# Env:   DATA_DIR=../shared/data  NCBI-disease PubTator files (ncbi-disease/) and MEDIC 2012 (medic/),
#                                 the layout of projects/angel's assets
#        DOCS=40                  NCBI-disease documents kept per split (tiny data)
#        PY=REPO/.venv/bin/python an interpreter with CUDA torch, spacy-angel[train,scale] and deepspeed
# Tiny data: the NCBI-disease splits cut to $DOCS documents each, MEDIC as the benchmark KB, and a
# 12-concept synthetic UMLS (MRCONSO / MRSTY / MRDEF written below) for KB pre-training; the base
# model is made offline by `spacy-angel init-model` (the machine needs no hub access).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
case "$PY" in /*) ;; *) PY="$PWD/$PY" ;; esac            # absolute, but not resolved: keep the venv
BIN="$(dirname "$PY")"
export PATH="$BIN:$PATH"                                   # spacy-angel, accelerate, weasel of that env
DATA_DIR="$(realpath "${DATA_DIR:-$REPO/../shared/data}")"
DOCS="${DOCS:-40}"
WORK="${1:-$(mktemp -d /tmp/angel-gpu-smoke.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
START=$SECONDS
step() { echo "== [$((SECONDS - START))s] $*"; }

step "checks"
"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this is the GPU smoke test")
try:
    import deepspeed  # noqa: F401  (the ZeRO-2 config is what this script exercises)
except ImportError:
    sys.exit("deepspeed is not installed: pip install deepspeed")
import ray  # noqa: F401  (the [scale] extra)
print(torch.cuda.get_device_name(0), "bf16" if torch.cuda.is_bf16_supported() else "no bf16")
EOF
for f in ncbi-disease/NCBItrainset_corpus.txt ncbi-disease/NCBIdevelopset_corpus.txt \
         ncbi-disease/NCBItestset_corpus.txt medic/medic_06Jul2012.txt; do
    [ -f "$DATA_DIR/$f" ] || { echo "missing $DATA_DIR/$f (set DATA_DIR)" >&2; exit 1; }
done

step "tiny project copy and data in $WORK"
PROJ="$WORK/angel"
rm -rf "$PROJ"
cp -r "$REPO/projects/angel" "$PROJ"
rm -rf "$PROJ/training" "$PROJ/corpus" "$PROJ/metrics" "$PROJ/packages" "$PROJ/project.lock"
mkdir -p "$WORK/data/ncbi-disease" "$WORK/data/medic" "$WORK/umls"
for split in trainset developset testset; do   # first $DOCS PubTator documents (blank-line separated)
    awk -v RS= -v ORS='\n\n' -v n="$DOCS" 'NR <= n' "$DATA_DIR/ncbi-disease/NCBI${split}_corpus.txt" \
        > "$WORK/data/ncbi-disease/NCBI${split}_corpus.txt"
done
cp "$DATA_DIR/medic/medic_06Jul2012.txt" "$WORK/data/medic/"
"$PY" - "$WORK/umls" <<'EOF'
import sys
from pathlib import Path
out = Path(sys.argv[1])
concepts = {
    "C0011860": ["Type 2 diabetes mellitus", "NIDDM", "Adult-onset diabetes"],
    "C0011854": ["Type 1 diabetes mellitus", "IDDM", "Juvenile diabetes"],
    "C0006142": ["Breast cancer", "Malignant neoplasm of breast", "Mammary carcinoma"],
    "C0242379": ["Lung cancer", "Malignant neoplasm of lung", "Pulmonary carcinoma"],
    "C0020538": ["Hypertension", "High blood pressure"],
    "C0020649": ["Hypotension", "Low blood pressure"],
    "C0027051": ["Myocardial infarction", "Heart attack"],
    "C0149931": ["Migraine", "Migraine disorder"],
    "C0010674": ["Cystic fibrosis", "Mucoviscidosis"],
    "C0020179": ["Huntington disease", "Huntington chorea"],
    "C0002395": ["Alzheimer disease", "Alzheimer's dementia"],
    "C0030567": ["Parkinson disease", "Paralysis agitans"],
}
conso, sty, defs = [], [], []
for i, (cui, names) in enumerate(concepts.items()):
    for j, name in enumerate(names):
        pref = "Y" if j == 0 else "N"
        ts, stt = ("P", "PF") if j == 0 else ("S", "VO")
        conso.append(f"{cui}|ENG|{ts}|L{i:07d}|{stt}|S{i:03d}{j:04d}|{pref}|A{i:03d}{j:04d}||D{i:06d}||MSH|PT|D{i:06d}|{name}|0|N||")
    sty.append(f"{cui}|T047|B2.2.1.2.1|Disease or Syndrome|AT{i:07d}||")
    defs.append(f"{cui}|A{i:03d}0000|AT{i:07d}1||MSH|{names[0]} is a disease.|N||")
for name, rows in (("MRCONSO.RRF", conso), ("MRSTY.RRF", sty), ("MRDEF.RRF", defs)):
    (out / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
EOF
cat > "$PROJ/configs/benchmarks.yml" <<'EOF'
# gpu_smoke.sh: NCBI-disease only, tiny budgets
ncbi:
  requires: ["{data_dir}/ncbi-disease/NCBItrainset_corpus.txt", "{data_dir}/medic/medic_06Jul2012.txt"]
  kb_sources: ["{data_dir}/medic/medic_06Jul2012.txt"]
  kb_args: ["--format", "medic"]
  train: corpus/ncbi/train.txt
  dev: corpus/ncbi/dev.txt
  test: corpus/ncbi/test.txt
  corpus_format: pubtator
  positive_steps: 60
  positive_lr: 5.0e-4
  positive_batch: 16
  positive_warmup: 0.0
  dpo_epochs: 1
  dpo_lr: 1.0e-5
  dpo_batch: 16
EOF
sed -i -e 's/^max_steps = .*/max_steps = 100/' -e 's/^eval_frequency = .*/eval_frequency = 50/' "$PROJ/configs/ner_cpu.cfg"

VARS=(
    --vars.data_dir "$WORK/data" --vars.umls_dir "$WORK/umls" --vars.results_dir "$WORK/results"
    --vars.gpu.benchmarks ncbi --vars.gpu.e2e_benchmark ncbi --vars.gpu.base_model "$WORK/base"
    --vars.gpu.umls_semantic_types T047 --vars.gpu.umls_vocabularies MSH --vars.gpu.num_gpus 1
    --vars.gpu.pretrain_steps 40 --vars.gpu.pretrain_batch 8 --vars.gpu.pretrain_accumulation 2
    --vars.gpu.pretrain_dpo_pairs 200 --vars.gpu.pretrain_dpo_batch 8 --vars.gpu.num_beams 5
    --vars.gpu.ner_config configs/ner_cpu.cfg --vars.gpu.gpu_id -1   # tok2vec NER: no cupy needed
)
run_stage() { step "stage $1"; (cd "$PROJ" && "$PY" -m weasel run "$1" . "${VARS[@]}"); }

# The `all` workflow, stage by stage: the offline base model is made once the KBs exist.
run_stage build-kb
run_stage corpus
step "init-model (offline base model instead of BioBART-large)"
spacy-angel init-model "$PROJ/training/gpu/kb/ncbi" "$WORK/base" --size small \
    --corpus <(cut -d'|' -f15 "$WORK/umls/MRCONSO.RRF")
for stage in pretrain-data pretrain-positive pretrain-dpo finetune-positive mine finetune-dpo evaluate \
             train-ner assemble package; do
    run_stage "$stage"
done
for m in tfidf positive angel; do
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))['summary']; print(sys.argv[2], 'acc@1', s['acc@1'])" \
        "$PROJ/metrics/gpu/ncbi/$m.json" "$m"
done

step "bf16 linking throughput (and fp32 for comparison)"
"$PY" - "$PROJ" "$WORK/gpu_smoke.json" <<'EOF'
import json, sys, time
from pathlib import Path
import torch
from spacy_angel.linking.linker import AngelLinker
from training.data.corpora import read_pubtator

proj, out = Path(sys.argv[1]), Path(sys.argv[2])
mentions = list(read_pubtator(proj / "corpus/ncbi/test.txt"))
mentions = (mentions * (5000 // max(1, len(mentions)) + 1))[:5000]
result = {"device": torch.cuda.get_device_name(0), "mentions": len(mentions), "num_beams": 5}
for dtype in ("bfloat16", None):
    linker = AngelLinker.from_pretrained(proj / "training/gpu/ncbi/angel", proj / "training/gpu/kb/ncbi", device="cuda",
                                         dtype=dtype, num_beams=5, batch_size=128, cache_size=0)
    linker.link(mentions[:256], top_k=5)  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    linker.link(mentions, top_k=5)
    torch.cuda.synchronize()
    result[f"mentions_per_s_{dtype or 'float32'}"] = round(len(mentions) / (time.perf_counter() - t0), 1)
    del linker
    torch.cuda.empty_cache()
out.write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
EOF

step "link --engine ray: 2 actors sharing the GPU"
"$PY" - "$PROJ/corpus/ncbi/test.txt" "$WORK/ray_in.jsonl" <<'EOF'
import json, sys
from training.data.corpora import read_pubtator
docs = {}
for m in read_pubtator(sys.argv[1]):
    docs.setdefault(m.doc_id, {"id": m.doc_id, "text": m.text, "spans": []})["spans"].append({"start": m.start, "end": m.end})
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for rec in docs.values():
        f.write(json.dumps(rec) + "\n")
EOF
spacy-angel link "$PROJ/training/gpu/ncbi/angel" "$PROJ/training/gpu/kb/ncbi" "$WORK/ray_in.jsonl" \
    --output "$WORK/ray_out" --engine ray --workers 2 --num-gpus-per-worker 0.5 --shard-size 10 --device cuda
spacy-angel link "$PROJ/training/gpu/ncbi/angel" "$PROJ/training/gpu/kb/ncbi" "$WORK/ray_in.jsonl" \
    --output "$WORK/single_out.jsonl" --device cuda
[ "$(cat "$WORK"/ray_out/*.jsonl | wc -l)" -eq "$(wc -l < "$WORK/single_out.jsonl")" ] \
    || { echo "ray output and single-process output differ in length" >&2; exit 1; }

step "paper-sized model (BART-large shape, random weights): beam, hybrid, int8 mentions/s on the GPU"
# needs MEDIC 2017 and the BioSyn NCBI-disease dev split under DATA_DIR (../shared/data's layout)
if [ -f "$DATA_DIR/medic/CTD_diseases_2017.tsv.gz" ] && [ -d "$DATA_DIR/biosyn/ncbi-disease/processed_dev" ]; then
    SPACY_ANGEL_DATA="$DATA_DIR" "$PY" "$REPO/bench/paper_scale.py" --device cuda --mentions 64 \
        --cache-dir "$WORK/bench-cache" --json "$WORK/paper_scale.json"
else
    echo "skipped: MEDIC 2017 or BioSyn NCBI-disease dev not under $DATA_DIR"
fi

step "done in $((SECONDS - START))s (target: under 480s); results in $WORK/gpu_smoke.json"

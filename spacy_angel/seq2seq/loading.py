"""Loading and saving a Hugging Face seq2seq model with its tokenizer: paths, device, dtype.

Why a room of its own: every entry point (the spaCy component, the CLI, training, benches) loads
models the same way, so the checks that turn a wrong path into a clear message, the device and
dtype rules, and ``trust_remote_code=False`` (only architectures transformers itself ships may
load: a model directory must never run code) live in one place.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

# isort: split
from spacy_angel.seq2seq import lean_transformers  # noqa: F401  (before transformers' generation code: ~100 MB less RSS)

# isort: split
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from spacy_angel.errors import Errors, LinkerError
from spacy_angel.fileio import atomic_directory

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer_config.json")


DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


QUANTIZED = ("int8",)  # dynamic int8 linear layers (CPU): loaded in float32, then quantised
FLOAT32 = (None, "", "float32", "fp32")
#: every ``dtype`` setting a model loads with (the component's config check reads this list)
DTYPE_NAMES = tuple(d for d in FLOAT32 if d != "") + tuple(DTYPES) + QUANTIZED


def load_model_and_tokenizer(
    model_name_or_path: Union[str, Path], device: str = "auto", dtype: Optional[str] = None
) -> Tuple[PreTrainedModel, object]:
    """Load a seq2seq model (in eval mode, on ``device``) and its tokenizer from a directory or a hub id."""
    path = Path(model_name_or_path)
    if path.exists():
        if not path.is_dir():
            raise LinkerError(Errors.E001.format(path=path))
        if not (path / "config.json").exists():
            raise LinkerError(Errors.E002.format(path=path))
        if not any((path / f).exists() for f in TOKENIZER_FILES):
            raise LinkerError(Errors.E003.format(path=path))
    elif path.is_absolute() or str(model_name_or_path).startswith((".", "~")) or str(model_name_or_path).count("/") > 1:
        # not a hub id ("org/name"): a local directory that is not there
        raise LinkerError(Errors.E004.format(path=path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_name_or_path), trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 (tokenizers raises a bare Exception on a cut-short tokenizer.json)
        raise LinkerError(Errors.E005.format(model=model_name_or_path, err=err)) from err
    torch_dtype = parse_dtype(dtype)
    target = resolve_device(device)
    if dtype in QUANTIZED and target.type != "cpu":
        raise LinkerError(Errors.E008.format(dtype=dtype, device=target))
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            str(model_name_or_path), trust_remote_code=False, torch_dtype=torch_dtype, use_safetensors=None
        )
    except Exception as err:  # noqa: BLE001 (safetensors raises SafetensorError on a cut-short or foreign file)
        raise LinkerError(Errors.E006.format(model=model_name_or_path, err=err)) from err
    model.eval()
    model.to(target)
    if dtype in QUANTIZED:
        model = quantize_int8(model)
    if dtype in QUANTIZED or torch_dtype is not None:  # to_disk copies the weights as loaded from here
        model._angel_source = path if path.is_dir() else None
    return model, tokenizer


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch).

    torch's own ``quantize_dynamic`` (fbgemm on x86): linear layers are most of the linker's FLOPs.
    Embeddings, layer norms and attention stay float32; the tied LM head becomes its own int8
    copy. Inference only: a quantised model is not saved or trained.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 warns that quantised tensor constructors are deprecated (to move to torchao);
        # quantize_dynamic itself still works and is measured in docs/performance.md.
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantized.eval()
    quantized._angel_quantized = "int8"
    return quantized


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def parse_dtype(dtype: Optional[str]) -> Optional[torch.dtype]:
    """``float16`` / ``bfloat16`` (or ``fp16`` / ``bf16``); None, ``""``, ``float32`` and ``int8`` load float32."""
    if dtype in FLOAT32 or dtype in QUANTIZED:
        return None
    if dtype not in DTYPES:
        raise LinkerError(Errors.E007.format(dtype=dtype))
    return DTYPES[dtype]


def save_pretrained_atomic(model, tokenizer, output_dir: Union[str, Path]) -> Path:
    """Save a model + tokenizer directory via a temp dir and a rename (no half-written checkpoints)."""
    with atomic_directory(output_dir) as tmp:
        save_model_files(model, tokenizer, tmp)
    return Path(output_dir)


def save_model_files(model, tokenizer, directory: Union[str, Path]) -> None:
    """Model + tokenizer files into ``directory`` (a temp folder of :func:`atomic_directory`, which the
    caller may fill with more files before its rename).

    A model loaded in int8, float16 or bfloat16 from a directory is saved as that directory's weights
    (copied), so that the saved pipeline loads with any dtype and nothing is rounded twice; a half-precision
    model from a hub id is saved as it is.
    """
    quantized = getattr(model, "_angel_quantized", None)
    source = getattr(model, "_angel_source", None)
    if quantized and source is None:
        raise LinkerError(Errors.E009.format(dtype=quantized))
    if source is not None:
        for item in Path(source).iterdir():
            if item.is_file() and (item.suffix in (".json", ".safetensors") or item.name == "generation_config.json"):
                shutil.copy2(item, Path(directory) / item.name)
    else:
        model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)

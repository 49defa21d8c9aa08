"""What a training stage must know when ``accelerate launch`` (DDP or DeepSpeed) runs N copies of it.

Why: the positive and preference stages run under ``accelerate launch`` unchanged, so every process
executes the same code. Only the main process may prepare the checkpoint directory and write the
final model and log (the others would race it and delete each other's files), the others must wait
for it before they read that output, and a decision each process takes from its own clock (the
wall-clock safety cap) must be the same everywhere, or the next collective operation hangs.

Ranks come from the launcher's environment (``RANK`` / ``WORLD_SIZE``, set by ``accelerate launch``,
``torchrun`` and the DeepSpeed launcher) until the Trainer has started ``torch.distributed``, then
from ``torch.distributed`` itself. A plain ``python`` run is rank 0 of 1 and nothing here costs.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

#: ``accelerate launch`` passes the DeepSpeed config's ``gradient_accumulation_steps`` on in this variable
ACCUMULATION_ENV = "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the job (1 outside a launcher)."""
    return dist.get_world_size() if _initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes outputs."""
    return (dist.get_rank() if _initialized() else int(os.environ.get("RANK", "0"))) == 0


def wait_for_everyone() -> None:
    """A barrier once ``torch.distributed`` is up (the Trainer starts it); a no-op otherwise."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def agree(flag: bool) -> bool:
    """The main process's ``flag`` on every process (so all stop at the same step)."""
    if not _initialized() or dist.get_world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def accumulation_steps() -> int:
    """Gradient accumulation the launcher asks for (1 without one).

    DeepSpeed refuses to start when its config's ``gradient_accumulation_steps`` differs from the
    Trainer's, so the stages read the number ``accelerate launch`` exports from the config file
    instead of asking for it twice.
    """
    raw = os.environ.get(ACCUMULATION_ENV, "1").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1

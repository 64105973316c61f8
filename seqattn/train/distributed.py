"""torchrun / DDP helpers (gloo on CPU, NCCL on GPU); a single process works with the same calls.

Two kinds of collective, kept apart so that neither stalls the GPU:

- host values (flags, counts, seconds: Python numbers the loop already has on the host) go through a gloo
  process group on the CPU, so agreeing on "is this batch empty?" never waits for the GPU's queue;
- device tensors (loss sums, statistics) are reduced on the process's device, NCCL on GPUs, and stay there:
  nothing is read back to the host until a caller asks.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from seqattn.utils.device import resolve_device


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # this process's device (cuda:LOCAL_RANK under torchrun on GPUs)
    host_group: object = None  # gloo group for host-value collectives (None: the default group, already gloo)

    @property
    def device_ids(self) -> list[int] | None:
        """What DistributedDataParallel wants: this process's GPU, or None on the CPU."""
        return [self.device.index] if self.device.type == "cuda" else None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_differentiable(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce sum that gradients flow through (identity in a single process)."""
        if not self.enabled:
            return tensor
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)

    def min_int(self, value: int) -> int:
        """The smallest of every rank's host ``value`` (over gloo: no GPU involved)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.host_group)
        return int(t.item())

    def sum_floats(self, values: list[float]) -> list[float]:
        """Every rank's host ``values`` summed (over gloo: no GPU involved)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.host_group)
        return t.tolist()

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when the host ``flag`` is true on any (over gloo: no GPU involved)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return bool(t.item())

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """A device tensor summed over ranks, in place and on its device (nothing read back to the host)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def max_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """A device tensor's elementwise maximum over ranks, in place and on its device."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistributedContext:
    """Initialise from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process without it,
    on ``device`` (auto | cpu | cuda | cuda:N; under torchrun a GPU run uses cuda:LOCAL_RANK). The backend
    follows the device: NCCL for GPUs, gloo for the CPU.

    The timeout bounds how long a rank waits for a dead peer, so a killed rank ends the job instead of
    hanging it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        return DistributedContext(device=resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    host_group = None
    if dist.get_backend() != "gloo":  # host values need a CPU group next to NCCL's
        host_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedContext(rank, world, local_rank, resolved, host_group)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()

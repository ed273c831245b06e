"""Functions the distributed tests run on every rank (shipped as source in their images)."""

from __future__ import annotations

import os
import time


def all_reduce_sum() -> dict[str, float | int]:
    """Every rank adds rank + 1; the sum over the ranks comes back from rank 0."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        tensor = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(tensor)
        print(f"all_reduce gave {tensor.item():g} on rank {dist.get_rank()}", flush=True)
        return {"sum": float(tensor.item()), "world_size": dist.get_world_size()}
    finally:
        dist.destroy_process_group()


def raise_on_rank_one() -> str:
    """Rank 1 raises after the ranks met; rank 0 would wait for ever if nobody stopped it."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    dist.barrier()
    if dist.get_rank() == 1:
        raise ValueError("rank 1 refuses")
    print("rank 0 waits", flush=True)
    while True:
        time.sleep(1)


def rank_of_process() -> int:
    """This process's RANK (torch.distributed's variable), printed and returned."""
    rank = int(os.environ["RANK"])
    print(f"I am rank {rank} of {os.environ['WORLD_SIZE']}", flush=True)
    return rank


def fail_on_rank_one() -> int:
    """Rank 1 raises; the other ranks wait for ever unless stopped."""
    rank = int(os.environ["RANK"])
    if rank == 1:
        raise KeyError("rank one")
    while True:
        time.sleep(1)


def die_on_rank_one() -> int:
    """Rank 1 dies without an outcome (as when the kernel kills it); rank 0 waits."""
    rank = int(os.environ["RANK"])
    if rank == 1:
        os._exit(137)
    while True:
        time.sleep(1)


def print_then_wait() -> int:
    """Every rank says it is up, then waits for ever (to be interrupted)."""
    print(f"rank {os.environ['RANK']} is up", flush=True)
    while True:
        time.sleep(1)

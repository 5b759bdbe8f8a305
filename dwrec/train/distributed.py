"""Multi-process training with DistributedDataParallel (``dwrec train --nproc N`` or torchrun).

Two ways in, one code path: ``--nproc N`` spawns N local workers
(:mod:`dwrec.train.launch`) that each run :func:`dwrec.train.trainer.train` with the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT`` variables torchrun would set, so ``torchrun
--nproc-per-node N -m dwrec train ...`` and ``dwrec train --nproc N`` meet in
:func:`start`. Backend: gloo on CPU, NCCL on CUDA with one GPU per rank
(``cuda:LOCAL_RANK``).

What a rank does (the contract the trainer keeps, docs/train.md "Multi-process training"):

- every rank draws the same shuffled order and builds the same *global* batch
  (``--batch-size`` sequences, BERT4Rec masks included) from identically seeded generators,
  then trains on its own contiguous slice (:func:`rank_rows`);
- the per-rank loss is scaled (:func:`rank_loss_scale`) so that DDP's gradient *average*
  equals the gradient of the one-process loss on the global batch;
- the domain weighting's state is updated from the global batch's positives on every
  rank, so the weights stay identical without any communication;
- validation cases are sharded over the ranks and the ranks gathered
  (:func:`evaluate_sharded`); rank 0's metrics are broadcast, so early stopping is decided
  identically everywhere;
- only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from dwrec.devices import resolve_device
from dwrec.errors import DwrecError, UsageError

T = TypeVar("T")

ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """Where this process sits in a multi-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


# ---------------------------------------------------------------- start and stop


def world_from_environment() -> World | None:
    """The torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or ``None`` when
    this process was not started as one rank of several."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    values = {}
    for name in ENV_NAMES:
        raw = os.environ.get(name, "0" if name == "LOCAL_RANK" else "")
        try:
            values[name] = int(raw)
        except ValueError:
            raise UsageError(f"environment variable {name}={raw!r} is not an integer") from None
    world = World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if world.world_size < 1 or not 0 <= world.rank < world.world_size or world.local_rank < 0:
        raise UsageError(
            f"RANK={world.rank}, WORLD_SIZE={world.world_size}, LOCAL_RANK={world.local_rank}: "
            "need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    return world if world.enabled else None


def rank_device(world: World | None, device_name: str) -> torch.device:
    """This rank's device: ``--device`` for one process; with several, ``cuda:LOCAL_RANK``
    (``--device cuda``, or ``auto`` where CUDA is available) or the CPU."""
    if world is None:
        return resolve_device(device_name)
    if device_name.startswith("cuda:"):
        raise UsageError(
            f"--device {device_name}: with several processes each rank uses the GPU "
            "cuda:LOCAL_RANK; pass --device cuda (or auto)"
        )
    device = resolve_device(device_name)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise UsageError(
            f"LOCAL_RANK {world.local_rank} has no GPU: this machine has {count} CUDA "
            f"device(s); start at most {count} processes per machine"
        )
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def start(world: World | None, device_name: str) -> tuple[World, torch.device]:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns the world and this
    rank's device. ``world=None``: one process, nothing to join."""
    device = rank_device(world, device_name)
    if world is None:
        return SINGLE, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise UsageError(
                    f"WORLD_SIZE={world.world_size} but {name} is not set: start the ranks "
                    "with torchrun, or use dwrec train --nproc N"
                )
        options: dict[str, Any] = {"backend": backend}
        if device.type == "cuda":
            options["device_id"] = device  # binds the communicator to this rank's GPU
        dist.init_process_group(rank=world.rank, world_size=world.world_size, **options)
    return World(world.rank, world.world_size, world.local_rank, backend), device


def stop(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- collectives


def broadcast_object(world: World, value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if not world.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(world: World, value: Any) -> list[Any]:
    """Every rank's ``value``, by rank."""
    if not world.enabled:
        return [value]
    values: list[Any] = [None] * world.world_size
    dist.all_gather_object(values, value)
    return values


def on_main(world: World, action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 only (e.g. claim the run dir) and hand its result to every
    rank. An error on rank 0 is raised on every rank, so no rank waits for a collective
    that will never come."""
    if not world.enabled:
        return action()
    outcome: tuple[str, Any] = ("ok", None)
    error: BaseException | None = None
    if world.is_main:
        try:
            outcome = ("ok", action())
        except DwrecError as exc:
            error = exc
            outcome = ("usage" if isinstance(exc, UsageError) else "error", str(exc))
        except Exception as exc:
            error = exc
            outcome = ("error", f"rank 0 failed: {type(exc).__name__}: {exc}")
    kind, payload = broadcast_object(world, outcome)
    if error is not None:
        raise error
    if kind == "usage":
        raise UsageError(payload)
    if kind == "error":
        raise DwrecError(payload)
    return payload


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not world.enabled:
        return flag
    votes = torch.tensor([float(flag)], device=device)
    dist.all_reduce(votes)
    return bool(votes.item() > 0)


def reduce_step(world: World, rank_loss: torch.Tensor, stop_vote: bool) -> torch.Tensor:
    """``[global loss, stop votes]`` (the sum over ranks of ``rank_loss / world_size``, and
    how many ranks saw Ctrl-C). Read on the host one step late, like the one-process loss."""
    values = torch.stack(
        [rank_loss.detach().float() / world.world_size, torch.zeros_like(rank_loss.float())]
    )
    if stop_vote:
        values[1] = 1.0
    dist.all_reduce(values)
    return values


# ---------------------------------------------------------------- the data each rank trains on


def rank_rows(
    inputs: torch.Tensor, targets: torch.Tensor, world: World
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's contiguous slice of the global batch's rows, and its gradient factor.

    A global batch with fewer rows than ranks (the last batch of an epoch can be that short)
    leaves some ranks without rows. Such a rank still has to run the forward and backward
    passes (DDP reduces gradients from every rank at every step) and to draw the batch's
    shared negatives (or its sampling stream would drift from the others): it trains on a
    copy of the batch's first row with factor 0, contributing a zero gradient.
    """
    parts = torch.arange(inputs.shape[0]).tensor_split(world.world_size)
    mine = parts[world.rank]
    if len(mine) == 0:
        return inputs[:1], targets[:1], 0.0
    return inputs[mine], targets[mine], 1.0


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own random stream (dropout, per-position negatives);
    rank 0 keeps ``seed`` so its stream is a one-process run's."""
    if rank == 0:
        return seed
    return (seed * 1_000_003 + rank * 7_919) % (2**63 - 1)


def loss_denominator(weighting: Any, positives: torch.Tensor) -> torch.Tensor:
    """The ``D`` of ``weighting.reduce(losses) = sum_i w_i l_i / D`` for these positives
    (float64 scalar; the weights are the weighting's current, detached ones): the
    weighting's own :meth:`~dwrec.losses.base.Weighting.loss_denominator`."""
    return weighting.loss_denominator(positives)


def rank_loss_scale(
    weighting: Any,
    local_positives: torch.Tensor,
    global_positives: torch.Tensor,
    world_size: int,
) -> torch.Tensor:
    """The factor that turns this rank's ``weighting.reduce`` into its DDP loss.

    One process minimises ``L = sum_{i in batch} w_i l_i / D`` (``D``: the global batch's
    ``sum w`` or its number of positions). Rank r's ``reduce`` gives ``sum_{i in r} w_i l_i
    / D_r``, and DDP *averages* the ranks' gradients: ``grad = (1/W) sum_r grad L_r``. With
    ``L_r = W * D_r / D * reduce_r = W * sum_{i in r} w_i l_i / D`` the average is
    ``sum_r sum_{i in r} w_i grad l_i / D = grad L`` exactly (the ranks' slices partition
    the batch, and ``w`` is the same detached state on every rank). A plain per-rank mean
    would weight each rank's positions by ``1 / D_r`` instead, which differs whenever the
    ranks' slices hold different numbers of positions (or different weight sums).
    """
    local = loss_denominator(weighting, local_positives)
    total = loss_denominator(weighting, global_positives)
    return world_size * local / total.clamp_min(1e-12)


# ---------------------------------------------------------------- evaluation


def evaluate_sharded(
    model: Any,
    dataset: Any,
    split: Any,
    world: World,
    *,
    which: str = "valid",
    ks: Sequence[int] = (10,),
    batch_size: int = 512,
    device: torch.device | None = None,
) -> dict[str, float]:
    """:func:`dwrec.eval.evaluator.evaluate_model`, with the cases dealt round-robin to the
    ranks (case i to rank ``i mod W``, which spreads long and short histories evenly), the
    per-case ranks gathered back into case order, and rank 0's metrics broadcast."""
    from dwrec.data.split import Cases
    from dwrec.eval import metrics
    from dwrec.eval.evaluator import evaluate_model, rank_model

    if not world.enabled:
        return evaluate_model(
            model, dataset, split, which=which, ks=ks, batch_size=batch_size, device=device
        )
    cases = split.cases(which)
    mine = np.arange(world.rank, len(cases), world.world_size)
    part = Cases(cases.user[mine], cases.target[mine], cases.history_end[mine], cases.row[mine])
    ranking = rank_model(model, dataset, part, batch_size=batch_size, device=device)
    ranks = np.empty(len(cases), dtype=np.int64)
    for rank, piece in enumerate(gather_objects(world, ranking.ranks)):
        ranks[rank :: world.world_size] = piece
    per_case = metrics.per_case_metrics(ranks, sorted({int(k) for k in ks}))
    values = {name: float(v.mean()) if len(v) else 0.0 for name, v in per_case.items()}
    return broadcast_object(world, values)


# ---------------------------------------------------------------- checkpoint state per rank


def rank_random_state(sampling: torch.Generator) -> dict[str, Any]:
    """This rank's own random streams (rank 0's are also in ``last.pt``'s ``rng``)."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "sampling": sampling.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rank_random_state(state: dict[str, Any], sampling: torch.Generator) -> None:
    torch.set_rng_state(state["torch_cpu"])
    sampling.set_state(state["sampling"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])

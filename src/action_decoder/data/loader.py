"""Batches in our order: a seeded per-epoch permutation sharded by rank, so a resumed run continues on exactly the
batches an uninterrupted run would have seen, and every rank runs the same number of steps."""
from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Sampler

from action_decoder.data.clips import collate_clips


class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch, from position `start` (batches already trained, times the batch size).

    Training: a permutation seeded by (seed, epoch), cut into equal shards (the remainder dropped). Validation: every
    index once, dealt round-robin, each shard padded to equal length with its first index; the repeats are told
    apart by their clip ids (`counted_mask`), so metrics count each clip once while every rank still runs the same
    number of forwards (ZeRO-3 needs that)."""

    def __init__(self, size: int, seed: int, rank: int, world: int, train: bool, start: int = 0):
        self.size, self.seed, self.rank, self.world, self.train, self.start = size, seed, rank, world, train, start
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        n = self.size
        if self.train:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=generator).tolist()
            per_rank = n // self.world
            mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        else:
            per_rank = math.ceil(n / self.world) if n else 0
            mine = list(range(self.rank, n, self.world))
            mine = mine + [mine[0] if mine else 0] * (per_rank - len(mine))
        return mine[self.start:]

    def real_count(self) -> int:
        """Validation: indices of this rank's shard that are not padding (an empty shard is all padding)."""
        return len(range(self.rank, self.size, self.world))

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


def counted_mask(clip_ids: list[str], seen: set[str]) -> torch.Tensor:
    """True for clips not seen before in this pass (validation's padding repeats are False); updates `seen`."""
    out = []
    for cid in clip_ids:
        out.append(cid not in seen)
        seen.add(cid)
    return torch.tensor(out, dtype=torch.bool)


def _collate(pad_id: int):
    def collate(items):
        items = [item for item in items if item is not None]  # None = corrupt video, already counted
        return collate_clips(items, pad_id) if items else None
    return collate


def make_loader(dataset, sampler: EpochSampler, batch_size: int, num_workers: int, pad_id: int) -> DataLoader:
    # Own generator: iterating a DataLoader otherwise draws its worker base seed from the global RNG, so a
    # resumed run (RNG restored, loader re-created) would see different dropout masks than an uninterrupted one.
    generator = torch.Generator().manual_seed(sampler.seed * 100_003 + sampler.epoch)
    # persistent_workers=False: the loader is made anew each epoch (its sampler holds that epoch's permutation).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=sampler.train,
                      collate_fn=_collate(pad_id), num_workers=num_workers, persistent_workers=False,
                      generator=generator,
                      pin_memory=torch.cuda.is_available())  # pinned host pages: the non_blocking copies overlap


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

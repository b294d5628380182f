"""The sample contract every datamodule produces, and the shared dataloading logic.

A sample is a dict: ``image`` float32 [C, H, W]; ``prompt`` float32 [H, W] in {-1, 0, 1};
``has_prompt`` bool; ``label`` int64; optional ``explanation`` float32 [H, W] in [0, 1] and
``yesno`` int8; ``id`` str. Batches are the same keys with a leading batch dimension (``id`` a list).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset``
    narrow), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def capped_workers(requested: int) -> int:
    """``requested`` dataloader workers, at most one per available CPU (never below 0)."""
    return max(0, min(int(requested), available_cpus()))


class TensorSampleDataset(Dataset):
    """Samples held as tensors in memory (generated data, or a preprocessed cache)."""

    def __init__(
        self,
        images: torch.Tensor,
        prompts: torch.Tensor,
        has_prompt: torch.Tensor,
        labels: torch.Tensor,
        ids: list[str],
        explanations: torch.Tensor | None = None,
        transform: Transform | None = None,
    ) -> None:
        n = len(ids)
        for name, tensor in (("images", images), ("prompts", prompts), ("labels", labels)):
            if len(tensor) != n:
                raise ValueError(f"{name} has {len(tensor)} rows, ids has {n}")
        self.images = images.float()
        self.prompts = prompts.float()
        self.has_prompt = has_prompt.bool()
        self.labels = labels.long()
        self.ids = list(ids)
        self.explanations = None if explanations is None else explanations.float()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        sample: Sample = {
            "image": self.images[index],
            "prompt": self.prompts[index],
            "has_prompt": self.has_prompt[index],
            "label": self.labels[index],
            "id": self.ids[index],
        }
        if self.explanations is not None:
            sample["explanation"] = self.explanations[index]
        return self.transform(sample) if self.transform is not None else sample


class EpochSeededSampler(DistributedSampler):
    """A random order that depends only on (seed, epoch): a resumed run sees the same batches.

    Lightning calls :meth:`set_epoch` at the start of every epoch. Under DDP, process ``rank`` of
    ``num_replicas`` takes every ``num_replicas``-th index of that same order (padded by repeating
    its start when the size does not divide), so its ``k``-th batch of ``b`` samples and the other
    processes' ``k``-th batches together are the ``k``-th batch of ``num_replicas * b`` samples
    of one process. Being a ``DistributedSampler``, Lightning uses it as it is under DDP.
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size
        self.resume_at: tuple[int, int] | None = None

    def resume(self, epoch: int, skip: int) -> None:
        """Leave out the first ``skip`` indices of this process's share of ``epoch``'s order, once:
        a run resumed in the middle of that epoch sees the rest of it."""
        self.resume_at = (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.total_size > len(order) > 0:
            order = (order * -(-self.total_size // len(order)))[: self.total_size]
        share = order[self.rank : self.total_size : self.num_replicas]
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            share = share[self.resume_at[1] :]
            self.resume_at = None
        return iter(share)


class ResumableLoader(DataLoader):
    """A training loader whose place in the epoch is saved in checkpoints (Lightning's stateful
    loader interface), so that a run interrupted mid-epoch resumes with the batches it had not
    seen. ``position`` returns the batches of the current epoch already trained on."""

    def __init__(self, *args: Any, position: Callable[[], int] = lambda: 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": int(self.position())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, EpochSeededSampler) and self.batch_size:
            self.sampler.resume(int(state["epoch"]), int(state["batches"]) * self.batch_size)


#: Settings that count something (pixels, images, samples): a datamodule refuses a value below 1
#: (``num_workers`` below 0) when it is built, naming the setting, instead of failing later.
POSITIVE_SETTINGS = ("image_size", "batch_size", "n_train", "n_val", "n_test")


def check_sizes(settings: Mapping[str, Any], all_means: Sequence[str] = ()) -> None:
    """Raise ``ValueError`` naming the first setting of :data:`POSITIVE_SETTINGS` (or
    ``num_workers``) out of range; an image size may be one number or a pair. The settings named
    in ``all_means`` also take ``-1``, "all of them"."""
    for name in POSITIVE_SETTINGS:
        value = settings.get(name)
        if name in all_means and value == -1:
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        if value is not None and any(isinstance(v, int) and v < 1 for v in values):
            raise ValueError(f"{name}={value}: must be at least 1")
    if settings.get("num_workers", 0) < 0:
        raise ValueError(f"num_workers={settings['num_workers']}: must be 0 or more")


class PromptedDataModule(LightningDataModule):
    """Dataloaders over ``self.datasets`` (filled by a subclass's ``setup``).

    Subclasses set ``num_classes`` and ``in_channels`` in ``__init__``: the CLI links them to the
    model before anything is read.
    """

    num_classes: int = 2
    in_channels: int = 1
    #: Constructor arguments that are not hyperparameters (objects, not settings).
    hparams_ignore: tuple[str, ...] = ()
    #: Count settings where ``-1`` means "all of them" (:func:`check_sizes`).
    all_means: tuple[str, ...] = ()

    def __init__(
        self, batch_size: int = 16, num_workers: int = 0, seed: int = 0, predict_split: str = "test"
    ) -> None:
        """Settings every datamodule shares; subclasses take their own and forward these by keyword.

        Args:
            batch_size: samples per batch (per process under DDP).
            num_workers: dataloader worker processes (0: load in the main process); at most one
                per CPU this process may use, fewer are started when there are fewer CPUs.
            seed: seed of the shuffling order and of every random choice the data make (which
                samples carry prompts, how prompts are made incomplete, splits).
            predict_split: the split ``vapl predict`` runs on.
        """
        super().__init__()
        # Every subclass's arguments too: this collects the __init__ frames of the whole chain.
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        check_sizes(self.hparams, self.all_means)
        self.batch_size = batch_size
        self.num_workers = capped_workers(num_workers)
        if self.num_workers < num_workers:
            rank_zero_info(
                f"num_workers={num_workers}, but {available_cpus()} CPUs are available: "
                f"using {self.num_workers} dataloader workers"
            )
        self.seed = seed
        self.predict_split = predict_split
        self.datasets: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split; was setup() run?")
        dataset = self.datasets[split]
        options = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }
        if not shuffle:
            return DataLoader(dataset, **options)
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = EpochSeededSampler(len(dataset), self.seed, replicas, rank)
        return ResumableLoader(dataset, sampler=sampler, position=self._batches_done, **options)

    def _batches_done(self) -> int:
        """Training batches of the current epoch already completed (0 outside a fit)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

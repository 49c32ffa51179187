"""Batches on one device.

Training is a tight loop over small datasets, so the data must not be what limits it: when the
training and validation tensors fit in ``max_device_bytes`` they are copied to the device once and
every batch is an index slice of a permutation drawn *on* the device (no per-batch host copy, no
DataLoader). Larger data streams through a DataLoader with pinned memory and non-blocking copies.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from growsearch.data._config import Dataset
from growsearch.exceptions import UserError

__all__ = ["DeviceData"]

Batch = tuple[Tensor, Tensor]


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Rows(torch.utils.data.Dataset[Batch]):
    """Map-style dataset whose items are whole batches: one gather per batch, not per sample."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, rows: list[int]) -> Batch:  # type: ignore[override]
        idx = torch.tensor(sorted(rows))  # sorted: contiguous reads; order in a batch is moot
        return self.x[idx], self.y[idx]


class DeviceData:
    """A Dataset's splits served as batches on ``device``."""

    def __init__(
        self,
        ds: Dataset,
        device: torch.device | str,
        batch_size: int,
        max_device_bytes: int = 1 << 30,
        eval_batch_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = ds
        self.device = torch.device(device)
        self.batch_size = batch_size
        # No gradients are kept in evaluation, so larger batches fit and run faster.
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        size = _nbytes(ds.x_train, ds.y_train, ds.x_val, ds.y_val)
        self.on_device = size <= max_device_bytes
        self._pin = self.device.type == "cuda"
        if self.on_device:
            self._x_train = ds.x_train.to(self.device)
            self._y_train = ds.y_train.to(self.device)
            self._x_val = ds.x_val.to(self.device)
            self._y_val = ds.y_val.to(self.device)
        else:
            self._x_train, self._y_train = ds.x_train, ds.y_train
            self._x_val, self._y_val = ds.x_val, ds.y_val
        self._probes: dict[int, Tensor] = {}

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        return int(self._x_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self._x_val.shape[0])

    @property
    def _train_stop(self) -> int:
        """Rows used per epoch: a final batch of one sample is dropped, since BatchNorm cannot
        train on it (unless every batch is one sample by request)."""
        n = self.num_train
        return n - 1 if self.batch_size > 1 and n % self.batch_size == 1 else n

    @property
    def samples_per_epoch(self) -> int:
        return self._train_stop

    @property
    def steps_per_epoch(self) -> int:
        return -(-self._train_stop // self.batch_size)

    # ---- batches --------------------------------------------------------------------------
    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of shuffled training batches; the order follows ``generator``."""
        stop, bs = self._train_stop, self.batch_size
        if self.on_device:
            perm = self._permutation(generator)
            for start in range(0, stop, bs):
                idx = perm[start : start + bs]
                yield self._x_train[idx], self._y_train[idx]
            return
        sampler = RandomSampler(range(self.num_train), generator=self._cpu_generator(generator))
        for xb, yb in self._stream(self._x_train, self._y_train, sampler, bs):
            if xb.shape[0] == 1 and stop < self.num_train:
                continue  # the dropped final single-sample batch (shuffling moved its place)
            yield xb, yb

    def val_batches(self) -> Iterator[Batch]:
        """Validation batches in a fixed order."""
        yield from self._ordered(self._x_val, self._y_val, on_device=self.on_device)

    def test_batches(self) -> Iterator[Batch]:
        """Test batches in a fixed order (the test split stays on the host until used)."""
        ds = self.dataset
        if ds.x_test is None or ds.y_test is None:
            raise UserError(
                f"the {ds.name} dataset has no test split; evaluate on the validation split, "
                "or give a test split (mnist: the t10k files in data.root; csv: data.test)"
            )
        yield from self._ordered(ds.x_test, ds.y_test, on_device=self.device.type == "cpu")

    def probe(self, n: int = 256) -> Tensor:
        """The first ``n`` validation inputs on the device (the same every call; do not modify)."""
        if n not in self._probes:
            self._probes[n] = self._x_val[:n].to(self.device)
        return self._probes[n]

    # ---- helpers --------------------------------------------------------------------------
    def _permutation(self, generator: torch.Generator) -> Tensor:
        n = self.num_train
        if _same_device(generator.device, self.device):
            return torch.randperm(n, generator=generator, device=self.device)
        # A generator on another device: draw there, one copy per epoch.
        return torch.randperm(n, generator=generator, device=generator.device).to(self.device)

    @staticmethod
    def _cpu_generator(generator: torch.Generator) -> torch.Generator:
        if generator.device.type == "cpu":
            return generator
        # DataLoader samplers need a CPU generator: seed one from the given one (a sync per epoch).
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return torch.Generator().manual_seed(seed)

    def _ordered(self, x: Tensor, y: Tensor, on_device: bool) -> Iterator[Batch]:
        ebs = self.eval_batch_size
        if on_device:
            for start in range(0, int(x.shape[0]), ebs):
                yield x[start : start + ebs], y[start : start + ebs]  # views, no copies
            return
        yield from self._stream(x, y, SequentialSampler(range(int(x.shape[0]))), ebs)

    def _stream(
        self, x: Tensor, y: Tensor, sampler: torch.utils.data.Sampler[int], batch_size: int
    ) -> Iterator[Batch]:
        loader = DataLoader(
            _Rows(x, y),
            sampler=BatchSampler(sampler, batch_size, drop_last=False),
            batch_size=None,  # the dataset returns whole batches
            pin_memory=self._pin,
        )
        for xb, yb in loader:
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

"""Channel maps: how a widened tensor's channels relate to the parent's.

A map over a tensor that had ``old`` channels and now has ``len(src)`` says, for every new channel
``j``, which old channel it copies (``src[j]``) and which share of that channel's outgoing weight
it carries (``frac[j]``). For every old channel the shares of all its copies sum to one, so a
consumer that scales its input columns by ``frac`` computes exactly what the parent computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ChannelMap", "widen_map"]


@dataclass(frozen=True)
class ChannelMap:
    src: Tensor  # (new,) int64: the old channel each new channel copies
    frac: Tensor  # (new,) float64: share of the old channel's outgoing weight; sums to 1 per source
    copy: Tensor  # (new,) bool: True for added channels (not the original of its source)
    old: int

    @property
    def new(self) -> int:
        return int(self.src.numel())

    @staticmethod
    def identity(n: int) -> ChannelMap:
        return ChannelMap(
            torch.arange(n), torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool), n
        )

    def is_identity(self) -> bool:
        return self.new == self.old and bool(torch.equal(self.src, torch.arange(self.old)))

    def expand(self, hw: int) -> ChannelMap:
        """The map of the flattened tensor: channel c owns the ``hw`` consecutive features
        c*hw ... c*hw + hw - 1 (any H x W, square or not)."""
        offsets = torch.arange(hw)
        src = (self.src[:, None] * hw + offsets[None, :]).reshape(-1)  # (new * hw,)
        return ChannelMap(
            src,
            self.frac.repeat_interleave(hw),
            self.copy.repeat_interleave(hw),
            self.old * hw,
        )

    @staticmethod
    def cat(maps: list[ChannelMap]) -> ChannelMap:
        """The map of a channel concatenation whose parts have the given maps."""
        srcs, offset = [], 0
        for m in maps:
            srcs.append(m.src + offset)
            offset += m.old
        return ChannelMap(
            torch.cat(srcs),
            torch.cat([m.frac for m in maps]),
            torch.cat([m.copy for m in maps]),
            offset,
        )

    def same_as(self, other: ChannelMap) -> bool:
        return (
            self.old == other.old
            and torch.equal(self.src, other.src)
            and torch.equal(self.frac, other.frac)
        )


def widen_map(old: int, new: int, rng: np.random.Generator) -> ChannelMap:
    """Keep the ``old`` channels in place and append ``new - old`` copies.

    Sources come from a random permutation of the old channels, cycled, so a factor of exactly 2
    copies every channel once. The shares of the copies of one channel are an unequal random split
    of one: replicated units then get different gradients and drift apart under training while
    the function stays exact (no noise needed). Independent draws can land arbitrarily close
    together (then the copies barely diverge), so the k copies of a channel draw from k disjoint
    strata of [0.3, 0.7] in random order: any two raw shares differ by at least 0.16 / k.
    """
    if new <= old:
        raise ValueError(f"new width {new} must exceed the old width {old}")
    perm = rng.permutation(old)
    extra = np.resize(perm, new - old)  # cycles through the permutation
    src = np.concatenate([np.arange(old), extra])
    counts = np.bincount(src, minlength=old)
    # rank[j]: a random position of channel j among the copies of its source, 0 .. k - 1
    order = np.lexsort((rng.permutation(new), src))
    starts = np.cumsum(counts) - counts
    rank = np.empty(new, dtype=np.int64)
    rank[order] = np.arange(new) - starts[src[order]]
    raw = 0.3 + 0.4 * (rank + rng.uniform(0.2, 0.8, size=new)) / counts[src]
    totals = np.bincount(src, weights=raw, minlength=old)
    frac = raw / totals[src]
    frac[counts[src] == 1] = 1.0  # untouched channels keep their weight exactly
    copy = np.zeros(new, dtype=bool)
    copy[old:] = True
    return ChannelMap(
        torch.from_numpy(src).long(),
        torch.from_numpy(frac).double(),
        torch.from_numpy(copy),
        old,
    )

"""Streaming softmax-weighted means: the shared math of the empirical and PSPC denoisers.

The posterior mean over a finite set is ``sum_i softmax_i(l) v_i``. Over a training set too large
for memory it is accumulated chunk by chunk with a running maximum (the online softmax of
Milakov & Gimelshein 2018), rescaling the partial sums whenever the maximum grows
(docs/reference.md section 2.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def exp_floor(dtype: torch.dtype) -> float:
    """Lowest shifted logit kept as such: below it the weight is ``exp(floor)`` instead of
    ``exp(logit)``, both far below any weight that counts (``exp(-602)`` in float64, ``exp(-74)``
    in float32, against the largest weight 1), but ``exp(floor)``, and its products with pixel
    values, are normal numbers, never subnormal ones, whose arithmetic is slow on x86."""
    return 0.85 * math.log(torch.finfo(dtype).tiny)


@dataclass
class OnlineSoftmax:
    """Running state of ``sum_i exp(l_i - m) v_i`` and ``sum_i exp(l_i - m)``.

    ``m`` is ``[..., 1]``, ``num`` ``[..., D]``, ``den`` ``[..., 1]`` (leading dims shared).
    """

    m: Tensor
    num: Tensor
    den: Tensor

    @classmethod
    def empty(cls, lead: tuple[int, ...], dim: int, like: Tensor) -> OnlineSoftmax:
        """State for ``lead`` independent softmaxes over values of size ``dim``."""
        kw = dict(dtype=like.dtype, device=like.device)
        return cls(
            m=torch.full((*lead, 1), -torch.inf, **kw),
            num=torch.zeros((*lead, dim), **kw),
            den=torch.zeros((*lead, 1), **kw),
        )

    def update(self, logits: Tensor, values: Tensor) -> None:
        """Adds a chunk: ``logits [..., n]`` (overwritten in place) and ``values [..., n, D]``.

        ``values`` may broadcast over the leading dims (e.g. ``[n, D]`` for all rows).
        """
        m_new = torch.maximum(self.m, logits.amax(-1, keepdim=True))
        rescale = (self.m - m_new).exp_()  # 0 on the first chunk (exp(-inf))
        # no subnormal weights (see exp_floor): they would slow the products down at the sigmas
        # where many weights are tiny
        p = logits.sub_(m_new).clamp_(min=exp_floor(logits.dtype)).exp_()
        self.den = self.den * rescale + p.sum(-1, keepdim=True)
        self.num = self.num * rescale + torch.matmul(p, values)
        self.m = m_new

    def result(self) -> Tensor:
        """The softmax-weighted mean ``[..., D]``."""
        return self.num / self.den


def streaming_logsumexp(running: Tensor | None, logits: Tensor, dim: int) -> Tensor:
    """``logsumexp`` over ``dim`` of all chunks seen so far (``running`` is None at the start)."""
    chunk = torch.logsumexp(logits, dim)
    return chunk if running is None else torch.logaddexp(running, chunk)

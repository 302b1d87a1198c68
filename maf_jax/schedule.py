"""The static schedule of the incremental inverse: which units each step computes.

Step ``s`` of the inverse makes final the hidden units of degree ``s - 1`` and the
features of rank ``s``. Steps are grouped into blocks. At the start of a block, one
matrix product per layer adds up every contribution from inputs that were final
before the block; each step then adds only the contributions from inputs made
final inside the block. A step thus reads a few rows of each buffer instead of the
whole, and most of the arithmetic runs as wide matrix products.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from maf_jax.masks import MadeLayout

__all__ = ["Block", "Layer", "schedule"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """The work of one layer (hidden or output) within a block.

    Attributes:
        before: Inputs ``[0, before)`` are final before the block.
        inside: Inputs ``[inside[0], inside[1])`` become final within the block.
        rows: Units ``[rows[0], rows[1])`` that the block's windows cover.
        width: Units computed per step.
        starts: First unit of the window at each step, shape ``(k,)``.
    """

    before: int
    inside: tuple[int, int]
    rows: tuple[int, int]
    width: int
    starts: np.ndarray


@dataclasses.dataclass(frozen=True)
class Block:
    """Consecutive steps ``steps`` of the inverse, run by one ``lax.scan``.

    Attributes:
        steps: The steps, shape ``(k,)``.
        hidden: Whether the steps compute hidden units (step 0 without context has
            none: the outputs of rank 0 are constants).
        layers: The hidden layers' work.
        output: The output layer's work; its units are the ``block * total``
            outputs of the features of each step.
        feature_starts: First feature of rank ``s`` at each step, ``(k,)``.
    """

    steps: np.ndarray
    hidden: bool
    layers: tuple[Layer, ...]
    output: Layer
    feature_starts: np.ndarray


def _window_starts(degree: np.ndarray, steps: np.ndarray, width: int) -> np.ndarray:
    """Start of the window of units of degree ``s - 1`` at each step.

    Where that degree has no unit, the window moves down onto units that are
    already final, which are recomputed to the same values, so that buffers never
    hold partial values.
    """
    first = np.searchsorted(degree, steps - 1, side="left")
    last = np.searchsorted(degree, steps - 1, side="right")
    start = np.where(last > first, first, last - width)
    return np.clip(start, 0, len(degree) - width).astype(np.int32)


def _block(layout: MadeLayout, steps: np.ndarray, hidden: bool) -> Block:
    a, b = int(steps[0]), int(steps[-1]) + 1
    block, total = layout.block, layout.total
    # inputs of the first layer are features: rank r is final after step r
    before, inside = min(layout.features, a * block), min(layout.features, (b - 1) * block)
    layers = []
    for degree in layout.hidden_degrees:
        counts = [(degree == s - 1).sum() for s in steps]
        width = max(1, int(max(counts)))
        starts = _window_starts(degree, steps, width)
        rows = (int(starts.min()), int(starts.max()) + width)
        layers.append(Layer(before, (before, max(before, inside)), rows, width, starts))
        # next layer's inputs: units of degree d are final after step d + 1
        before = int(np.searchsorted(degree, a - 2, side="right"))
        inside = int(np.searchsorted(degree, b - 2, side="right"))
    feature_starts = np.minimum(steps * block, layout.features - block).astype(np.int32)
    out_starts = feature_starts * total
    rows = (int(out_starts.min()), int(out_starts.max()) + block * total)
    output = Layer(before, (before, max(before, inside)), rows, block * total, out_starts)
    return Block(steps, hidden, tuple(layers), output, feature_starts)


@functools.lru_cache(maxsize=256)
def schedule(layout: MadeLayout, blocks: int | None = None) -> tuple[Block, ...]:
    """Groups the steps of the inverse into blocks.

    The steps before the first hidden unit, the step of the lowest degree (which
    holds the remainder units), then ``blocks`` blocks of about equal length over
    the regular steps.

    Args:
        layout: The MADE structure.
        blocks: Number of regular blocks; ``ceil(sqrt(steps) / 2)`` by default,
            which balances the reads of the wide products against those of the
            steps, and the scans to compile (benchmarks/README.md).
    """
    steps = np.arange(layout.steps)
    if not layout.hidden_features:
        head, peeled, rest = steps[:0], steps[:0], steps
    else:
        lowest = int(layout.hidden_degrees[0][0])
        head, peeled, rest = (
            steps[: lowest + 1],
            steps[lowest + 1 : lowest + 2],
            steps[lowest + 2 :],
        )
    out = [_block(layout, head, False)] if head.size else []
    out += [_block(layout, peeled, True)] if peeled.size else []
    if rest.size:
        count = blocks or math.ceil(math.sqrt(rest.size) / 2)
        out += [
            _block(layout, part, bool(layout.hidden_features))
            for part in np.array_split(rest, min(count, rest.size))
        ]
    return tuple(out)

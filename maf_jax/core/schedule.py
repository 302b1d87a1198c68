"""The static schedule of the incremental inverse: which units each step computes.

Step ``s`` of the inverse makes final the hidden units of degree ``s - 1`` and the
features of rank ``s``. Steps are grouped into blocks. At the start of a block, one
matrix product per layer adds up every contribution from inputs that are final (units
not final yet are zeros in the buffers between blocks); each step then adds only the
contributions from inputs made final inside the block. A step thus reads a few rows
of each buffer instead of the whole, and most of the arithmetic runs as wide matrix
products.

Blocks of one shape form a group, run by one ``lax.scan`` over its blocks, so that
the compiled program does not grow with the number of steps. The regular blocks form
one group in a few parts: a block's wide product reads the inputs that may be final
before any block of its part, so more parts waste less arithmetic, and each adds one
product per layer to the program (a ``lax.switch`` picks it), not a scan body.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from maf_jax.core.masks import MadeLayout

__all__ = ["Group", "Layer", "schedule", "with_null_units"]

# Default blocks: about STEPS steps each, at most MOST (benchmarks/inverse_sweep.py).
STEPS, MOST = 8, 8
# The step of the lowest degree comes again for the remainder units only where that
# adds at most one step in REPEAT: each is one more step to run (at 5 features,
# hidden 50, two more of 5 made sampling 40% slower; at 64, hidden 128, two of 64
# cost nothing measurable and saved 12% of the sampler's compile).
REPEAT = 16


@dataclasses.dataclass(frozen=True)
class Layer:
    """The work of one layer (hidden or output) in each block of a group.

    Attributes:
        width: Units computed per step.
        span: Units of the layer that a block's windows cover: its local buffer.
        lo: First unit of the span in each block, shape ``(blocks,)``.
        inside: Inputs ``[inside[b, 0], inside[b, 1])`` become final within block
            ``b``, shape ``(blocks, 2)``.
        starts: First unit of the window at each step, shape ``(blocks, k)``.
        befores: Inputs ``[0, befores[p])`` may be final before a block of part
            ``p``: the size of that part's wide product.
    """

    width: int
    span: int
    lo: np.ndarray
    inside: np.ndarray
    starts: np.ndarray
    befores: tuple[int, ...]

    @property
    def grows(self) -> bool:
        """Whether some block makes inputs final within it."""
        return bool((self.inside[:, 1] > self.inside[:, 0]).any())


@dataclasses.dataclass(frozen=True)
class Group:
    """Blocks of ``k`` consecutive steps each, all of one shape.

    Attributes:
        steps: The steps of each block, shape ``(blocks, k)``; the last step is
            repeated to fill the last block (it recomputes the same values).
        hidden: Whether the steps compute hidden units (step 0 without context has
            none: the outputs of rank 0 are constants).
        layers: The hidden layers' work.
        output: The output layer's work; its units are the ``block * total``
            outputs of the features of each step.
        feature_starts: First feature of rank ``s`` at each step, ``(blocks, k)``.
        parts: The part of each block, ``(blocks,)``: consecutive blocks, of one
            size of wide product per part.
    """

    steps: np.ndarray
    hidden: bool
    layers: tuple[Layer, ...]
    output: Layer
    feature_starts: np.ndarray
    parts: np.ndarray

    @property
    def works(self) -> tuple[Layer, ...]:
        """The layers the steps compute: the hidden ones if ``hidden``, the output."""
        return (*(self.layers if self.hidden else ()), self.output)


def _window_starts(
    degree: np.ndarray, steps: np.ndarray, width: int, chunk: np.ndarray | None = None
) -> np.ndarray:
    """Start of the window of units of degree ``s - 1`` at each step.

    Where that degree has fewer units than the window (none, or fewer than a wider
    degree of the group holds), the window ends with the degree's last unit and
    moves down onto units that are already final, which are recomputed to the same
    values, so that buffers never hold partial values (a window reaching past its
    degree would leave units not final in the buffers, which the next block's wide
    product reads). Before the lowest degree there are none: the window holds
    the lowest degree's units, which the step of that degree recomputes in the same
    block (``schedule``); no output of those first steps reads a hidden unit.

    Where the lowest degree holds more units than the window, ``chunk`` gives, at
    each step of that degree, which ``width`` of its units the window holds (the
    last one ends with the degree's last unit); ``-1`` elsewhere.
    """
    first = np.searchsorted(degree, steps - 1, side="left")
    last = np.searchsorted(degree, steps - 1, side="right")
    start = np.minimum(first, last - width)
    if chunk is not None:
        start = np.where(chunk >= 0, np.minimum(first + chunk * width, last - width), start)
    return np.clip(start, 0, len(degree) - width).astype(np.int32)


def _layer(
    starts: np.ndarray, width: int, units: int, inside: np.ndarray, parts: np.ndarray
) -> Layer:
    """A layer's spans: from the first window of each block to the last."""
    lo = starts.min(axis=1)
    span = int((starts.max(axis=1) + width - lo).max())
    lo = np.minimum(lo, units - span).astype(np.int32)
    befores = tuple(int(inside[parts == p, 0].max()) for p in range(parts.max() + 1))
    return Layer(width, span, lo, inside.astype(np.int32), starts, befores)


def _group(
    layout: MadeLayout, steps: np.ndarray, hidden: bool, parts: int = 1, lowest: int | None = None
) -> Group:
    """The blocks ``steps``; ``lowest``: the step of the lowest degree, if repeated.

    Where the lowest degree holds more units than the others, its step may come
    several times in a row (``schedule``): each time, every layer's window holds the
    next ``width`` units of that degree, each layer starting once the layer below
    is final, and the outputs before the last time are those of the rank below,
    final already, recomputed to the same values.
    """
    block, total, features = layout.block, layout.total, layout.features
    part = np.concatenate(
        [np.full(len(a), p) for p, a in enumerate(np.array_split(steps, parts))]
    ).astype(np.int32)
    # per hidden layer, the window's width and chunk (None: from the steps' degrees)
    ranks, windows = steps, [(None, None)] * len(layout.hidden_degrees)
    if lowest is not None:
        flat = steps.ravel()
        repeat = flat == lowest
        times = np.cumsum(repeat) - 1  # the how-many-th time of the lowest step
        lag, windows = 0, []
        for width, count in _chunks(layout):
            chunk = np.where(repeat, np.clip(times - lag, 0, count - 1), -1)
            windows.append((width, chunk.reshape(steps.shape)))
            lag += count - 1
        # the lowest step's outputs read every layer: final only the last time
        ranks = np.where(repeat & (times < lag), lowest - 1, flat).reshape(steps.shape)
    a, b = steps[:, 0], steps[:, -1] + 1
    # inputs of the first layer are features: rank r is final after step r
    before, inside = np.minimum(features, a * block), np.minimum(features, (b - 1) * block)
    layers = []
    for degree, (width, chunk) in zip(layout.hidden_degrees, windows):
        if width is None:
            width = max(1, int((degree[None, :] == steps.reshape(-1, 1) - 1).sum(axis=1).max()))
        starts = _window_starts(degree, steps, width, chunk)
        final = np.stack([before, np.maximum(before, inside)], 1)
        layers.append(_layer(starts, width, len(degree), final, part))
        # next layer's inputs: units of degree d are final after step d + 1
        before = np.searchsorted(degree, a - 2, side="right")
        inside = np.searchsorted(degree, b - 2, side="right")
    feature_starts = np.minimum(ranks * block, features - block).astype(np.int32)
    output = _layer(
        feature_starts * total,
        block * total,
        features * total,
        np.stack([before, np.maximum(before, inside)], 1),
        part,
    )
    return Group(steps, hidden, tuple(layers), output, feature_starts, part)


def _chunks(layout: MadeLayout) -> list[tuple[int, int]]:
    """Per hidden layer, the window's width and how many windows the lowest degree fills.

    The width is the most units of any other degree (the lowest's count where
    there is none); 0 windows where the lowest degree holds fewer units than that.
    """
    out = []
    for degree in layout.hidden_degrees:
        lowest, *others = np.unique(degree, return_counts=True)[1]
        width = int(max(others, default=lowest))
        out.append((width, -(-int(lowest) // width) if lowest >= width else 0))
    return out


@functools.lru_cache(maxsize=256)
def schedule(layout: MadeLayout, blocks: int | None = None, groups: int = 4) -> tuple[Group, ...]:
    """Groups the steps of the inverse into blocks, and blocks into groups.

    Where every layer's lowest degree holds as many units as its other degrees, one
    group of ``blocks`` blocks of equal length over all steps, in ``groups`` parts:
    one step in the compiled program. Otherwise the lowest degree holds the
    remainder units, and a window that wide at every step would cost its width in
    arithmetic (at 64 features, hidden 128: 4 units against 2, sampling about 15%
    slower). Its step then comes once more for each more window of its units
    (``_group``), still one group, where that adds at most one step in ``REPEAT``
    (at 64 features, hidden 128: 66 steps; the sampler's compile 12% smaller than
    with the three groups below, sampling as fast). Otherwise the steps before the
    first hidden unit and the step of the lowest degree are groups of their own,
    then the blocks over the regular steps.

    Args:
        layout: The MADE structure.
        blocks: Number of regular blocks; by default blocks of about 8 steps, at
            most 8: the steps' arithmetic shrinks with more blocks, while each
            block adds a product per layer to run and, with a part of its own,
            to compile (benchmarks/inverse_sweep.py).
        groups: Most parts of the regular blocks. A block's wide product reads
            every input final before the last block of its part: more parts waste
            less arithmetic, and each adds one product per layer to the program.
    """
    steps = np.arange(layout.steps)
    if not layout.hidden_features:
        return (_blocks(layout, steps, blocks, groups),)
    lowest = int(layout.hidden_degrees[0][0]) + 1  # the step of the lowest degree
    head, peeled, rest = steps[:lowest], steps[lowest : lowest + 1], steps[lowest + 1 :]
    counts = [count for _, count in _chunks(layout)]
    times = 1 + sum(count - 1 for count in counts)
    # (repeated, the lowest step's outputs before the last time are those of the
    # rank below: none below rank 0, where a hidden degree is -1)
    repeat = times == 1 or (head.size and (times - 1) * REPEAT <= steps.size)
    if rest.size and all(counts) and repeat:
        # one group: the head's windows hold the lowest degree's units, not final
        # yet, which the step of the lowest degree recomputes in the same block; it
        # comes once more for every window more that a layer's lowest degree fills
        sequence = np.concatenate([head, np.full(times, lowest), rest])
        whole = _blocks(layout, sequence, blocks, groups, lowest if times > 1 else None)
        if whole.steps.shape[1] >= head.size + times:
            return (whole,)
    out = [_group(layout, head[None], False)] if head.size else []
    out += [_group(layout, peeled[None], True)] if peeled.size else []
    if rest.size:
        out.append(_blocks(layout, rest, blocks, groups))
    return tuple(out)


def _blocks(
    layout: MadeLayout,
    steps: np.ndarray,
    blocks: int | None,
    groups: int,
    lowest: int | None = None,
) -> Group:
    """``steps`` in blocks of equal length, the last step repeated to fill the last.

    With the lowest step repeated (``lowest``), the steps rarely divide evenly (66 at
    64 features, hidden 128: 8 blocks of 9 would run 6 padded steps, 9% more than
    needed); by default the blocks are then as many, from ``MOST`` to twice that, as
    leave the fewest steps to pad (11 of 6 there, none padded).
    """
    count = min(blocks or min(MOST, -(-steps.size // STEPS)), steps.size)
    if lowest is not None and blocks is None and count == MOST:
        counts = range(MOST, min(2 * MOST, steps.size) + 1)
        count = min(counts, key=lambda c: c * -(-steps.size // c) - steps.size)
    k = -(-steps.size // count)
    count = -(-steps.size // k)  # no block made only of repeats
    padded = np.concatenate([steps, np.full(count * k - steps.size, steps[-1])])
    regular = padded.reshape(count, k)
    return _group(layout, regular, bool(layout.hidden_features), min(groups, count), lowest)


@functools.lru_cache(maxsize=256)
def with_null_units(layout: MadeLayout) -> tuple[MadeLayout, tuple[np.ndarray, ...]]:
    """``layout`` with null units where the schedule's windows need them.

    A window holds as many units as the widest degree of its group: it must find,
    at every step, either that many units of the step's degree or (where the
    degree has none) final units of the lowest degree. So every degree of a layer
    but the lowest has no units or ``m`` of them, and the lowest (the first
    layer's, in every layer) has at least ``m``. The layouts that maf_jax builds
    are so; others (zuko's, whose counts differ by one, or given ``degrees``) get
    null units, with zero weights in and out, which change no output.

    Returns:
        The layout to schedule (one hidden size per layer of ``layout.wiring``, so
        not residual), and for each hidden layer the index of every unit
        of the padded layer in the original one, -1 for a null unit.
    """
    if not layout.hidden_features:
        return layout, ()
    low = min(int(d[0]) for d in layout.hidden_degrees)
    degrees, indices = [], []
    for degree in layout.hidden_degrees:
        values, counts = np.unique(degree, return_counts=True)
        m = int(counts[values > low].max(initial=0))
        index, padded = [], []
        for d in sorted({low, *values.tolist()}):
            units = np.flatnonzero(degree == d).tolist()
            null = max(m - len(units), 0 if d > low else 1 - len(units), 0)
            index += [-1] * null + units
            padded += [d] * (null + len(units))
        indices.append(np.asarray(index))
        degrees.append(tuple(padded))
    if all(len(i) == len(d) for i, d in zip(indices, layout.hidden_degrees)):
        return layout, tuple(indices)
    sizes = tuple(map(len, degrees))
    padded = dataclasses.replace(
        layout, hidden_features=sizes, degrees=tuple(degrees), adjacency=None, residual=False
    )
    return padded, tuple(indices)

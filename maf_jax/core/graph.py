"""Masked networks over a graph of features: a DAG's order and zuko's unit labels.

A transform built from an ``adjacency`` matrix ``A`` (``A[i, j]``: feature ``i`` may
depend on input ``j``) lets each output see exactly its row. As in zuko's
``MaskedMLP``, a hidden unit is labelled with one distinct row of ``A`` (the inputs
it sees), units cycle through the labels that see something, a unit sees the units
below whose labels are subsets of its own, and an output sees the last layer's units
whose labels are subsets of its row.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_adjacency",
    "generations",
    "permutations",
    "subsets",
    "topological_order",
    "unit_labels",
    "with_diagonal",
]


def check_adjacency(adjacency, features: int, context: int) -> np.ndarray:
    """Validates a zuko adjacency matrix and returns it over features and context.

    Args:
        adjacency: Boolean ``(features, features)`` or ``(features, features +
            context)``, with ones on the diagonal (zuko's convention) and no cycle.
        features: The number of features.
        context: The number of context features; without context columns every
            feature sees every context feature.

    Returns:
        Boolean ``(features, features + context)`` with a zero diagonal.

    Raises:
        ValueError: For another shape or dtype, a zero on the diagonal, or a cycle.
    """
    a = np.asarray(adjacency)
    shapes = {(features, features), (features, features + context)}
    if a.shape not in shapes or a.dtype != bool:
        raise ValueError(
            f"adjacency must be a boolean matrix of shape {sorted(shapes)}, got "
            f"shape {a.shape} and dtype {a.dtype}"
        )
    if not a.diagonal().all():
        raise ValueError("adjacency must have ones on its diagonal, as in zuko")
    graph = a[:, :features] & ~np.eye(features, dtype=bool)
    generations(graph)  # raises on a cycle
    given = a[:, features:] if a.shape[1] > features else np.ones((features, context), bool)
    return np.concatenate([graph, given], axis=1)


def generations(graph: np.ndarray) -> np.ndarray:
    """Generation of each node of a DAG, 0 for nodes without parents.

    A node's generation is one more than its latest parent's.

    Args:
        graph: Boolean ``(n, n)``, ``graph[i, j]`` when node ``i`` depends on ``j``.

    Raises:
        ValueError: If the graph has a cycle, naming the nodes on or after one.
    """
    n = len(graph)
    generation = np.full(n, -1)
    remaining = graph.copy()
    done = np.zeros(n, bool)
    for g in range(n):
        ready = ~done & ~remaining.any(axis=1)
        if not ready.any():
            break
        generation[ready] = g
        done |= ready
        remaining[:, ready] = False
    if not done.all():
        raise ValueError(
            f"adjacency has a cycle: features {np.flatnonzero(~done).tolist()} depend on "
            "themselves through others"
        )
    return generation


def unit_labels(rows: np.ndarray, hidden_features: tuple[int, ...]):
    """Zuko's labelling of the hidden units of a network whose outputs see ``rows``.

    Args:
        rows: Boolean ``(outputs, inputs)``, the inputs each output may see.
        hidden_features: Sizes of the hidden layers.

    Returns:
        ``labels`` (the distinct rows, sorted as NumPy and torch sort them), the
        label index of every unit of each hidden layer, and each output's label.

    Raises:
        ValueError: If some layer would see nothing (zuko's "null Jacobian").
    """
    labels, output_labels = np.unique(rows, axis=0, return_inverse=True)
    subset = subsets(labels)
    units, mask = [], labels
    for size in hidden_features:
        reachable = np.flatnonzero(mask.any(axis=1))
        if reachable.size == 0:
            raise ValueError("the adjacency matrix leaves a layer with no input")
        units.append(reachable[np.arange(size) % reachable.size])
        mask = subset[:, units[-1]]
    if not mask.any():
        raise ValueError("the adjacency matrix leaves every output without input")
    return labels, units, output_labels.reshape(-1)


def topological_order(graph: np.ndarray) -> np.ndarray:
    """The order that sorts features by generation, ties by index.

    ``order[i]`` is feature ``i``'s position: every feature comes after those it
    depends on.
    """
    return np.argsort(np.argsort(generations(graph), kind="stable"), kind="stable")


def permutations(order: np.ndarray, degrees, total: int, context: int) -> list[np.ndarray]:
    """Index maps from the rank-sorted layout to one in the original feature order.

    Returns one array per layer boundary: the inputs (sorted features, then the
    context), each hidden layer (units by ascending degree, ties in their given
    order) and the outputs (``total`` per feature, feature-major); entry ``k`` of map
    ``m`` is the index, in the original layout, of unit ``k`` of the sorted one.
    """
    features = len(order)
    sorted_features = np.argsort(order)  # sorted position p holds feature sorted_features[p]
    inputs = np.concatenate([sorted_features, features + np.arange(context)])
    hidden = [np.argsort(d, kind="stable") for d in degrees]
    outputs = (sorted_features[:, None] * total + np.arange(total)).reshape(-1)
    return [inputs, *hidden, outputs]


def subsets(labels: np.ndarray) -> np.ndarray:
    """``S[i, j]``: the inputs of label ``j`` are a subset of label ``i``'s."""
    return (labels.astype(int) @ labels.T.astype(int)) == labels.sum(axis=1)[None, :]


def with_diagonal(adjacency) -> np.ndarray:
    """An adjacency in zuko's form: ones on the diagonal of its feature block."""
    adjacency = np.array(adjacency, dtype=bool)
    features = len(adjacency)
    adjacency[:, :features] |= np.eye(features, dtype=bool)
    return adjacency

"""Trees and histograms as Flower array records, for both sides of the histogram protocol
(`jointcredit.federation.protocol`: `train.histograms`)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from jointcredit.federation import protocol
from jointcredit.models.trees.ensemble import TreeEnsemble
from jointcredit.models.trees.tree import Tree

_STRUCTURE = ("feature", "threshold", "default_left", "left", "right", "special_left")
_VALUES = ("value", "cover")


def tree_record(tree: Tree, build: np.ndarray | None = None) -> ArrayRecord:
    """A tree as few arrays (its structure, its values, its category sets when it has any:
    every level's message carries the tree so far, and each array costs a header to parse),
    with the nodes whose histograms are asked for (`build`)."""
    arrays = {
        protocol.TREE_NODES: Array(
            np.stack([getattr(tree, k).astype(np.int64) for k in _STRUCTURE], axis=1)
        ),
        protocol.TREE_VALUES: Array(np.stack([getattr(tree, k) for k in _VALUES], axis=1)),
    }
    if tree.category_left.shape[1]:
        arrays[protocol.TREE_CATEGORIES] = Array(np.ascontiguousarray(tree.category_left))
    if build is not None:
        arrays[protocol.BUILD] = Array(np.asarray(build, dtype=np.int64))
    return ArrayRecord(array_dict=arrays)


def tree_of(record: ArrayRecord) -> tuple[Tree, np.ndarray | None]:
    if protocol.TREE_NODES not in record or protocol.TREE_VALUES not in record:
        raise protocol.ProtocolError("a tree record without its nodes and values")
    nodes, values = record[protocol.TREE_NODES].numpy(), record[protocol.TREE_VALUES].numpy()
    if (
        nodes.ndim != 2
        or nodes.shape[1] != len(_STRUCTURE)
        or values.shape != (len(nodes), len(_VALUES))
    ):
        raise protocol.ProtocolError("a tree record whose nodes and values do not match")
    categories = np.zeros((len(nodes), 0), dtype=bool)
    if protocol.TREE_CATEGORIES in record:
        categories = record[protocol.TREE_CATEGORIES].numpy()
        if categories.dtype != np.bool_ or categories.ndim != 2 or len(categories) != len(nodes):
            raise protocol.ProtocolError("a tree record whose category sets do not match")
    tree = Tree.from_arrays(
        {
            **{k: nodes[:, i] for i, k in enumerate(_STRUCTURE)},
            **{k: values[:, i] for i, k in enumerate(_VALUES)},
            "category_left": categories,
        }
    )
    build = record[protocol.BUILD].numpy() if protocol.BUILD in record else None
    if build is not None and (
        build.ndim != 1 or np.any(build < 0) or np.any(build >= tree.n_nodes)
    ):
        raise protocol.ProtocolError("build names nodes the tree does not have")
    return tree, build


def histogram_record(hist: np.ndarray) -> ArrayRecord:
    return ArrayRecord(
        array_dict={protocol.HISTOGRAMS: Array(np.ascontiguousarray(hist, dtype=np.float64))}
    )


def histograms_of(record: ArrayRecord, shape: tuple[int, ...]) -> np.ndarray:
    """The histograms a reply carries, checked: the shape asked for, finite, hessians >= 0."""
    if protocol.HISTOGRAMS not in record:
        raise protocol.ProtocolError("a histogram record without its histograms")
    hist = record[protocol.HISTOGRAMS].numpy()
    if hist.shape != shape or hist.dtype != np.float64:
        raise protocol.ProtocolError(
            f"histograms of shape {hist.shape} ({hist.dtype}), expected {shape} (float64)"
        )
    if not np.all(np.isfinite(hist)) or np.any(hist[..., 1] < 0):
        raise protocol.ProtocolError("histograms with non-finite values or negative hessians")
    return hist


def ensemble_record(ensemble: TreeEnsemble) -> ArrayRecord:
    return ArrayRecord(
        array_dict={k: Array(np.ascontiguousarray(v)) for k, v in ensemble.to_arrays().items()}
    )


def ensemble_of(record: ArrayRecord) -> TreeEnsemble:
    try:
        return TreeEnsemble.from_arrays({k: record[k].numpy() for k in record})
    except ValueError as exc:
        raise protocol.ProtocolError(f"not a tree ensemble: {exc}") from exc

"""One tree over bin codes, as flat arrays (node 0 is the root; children have higher ids).

An internal node sends a row left when its code for `feature` is <= `threshold` (a regular
bin), when the code is the feature's missing code and `default_left`, or when it is a special
value's bin whose bit is set in `special_left` (bit b: code missing - 1 - b; the special bins
sit just below the missing code, the regular ones below them, so no regular code has a bit
set). A node whose threshold is `CATEGORY_SPLIT` splits a categorical feature by a set: a row
goes left when `category_left[node, code]` (missing still by `default_left`). A leaf has
feature -1 and carries `value` (learning rate applied). `cover` is each node's hessian sum
(what TreeSHAP weighs paths by, as XGBoost's cover).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

LEAF = -1
CATEGORY_SPLIT = -2  # the threshold of a node splitting categories by a set
FIELDS = (
    "feature",
    "threshold",
    "default_left",
    "left",
    "right",
    "value",
    "cover",
    "special_left",
    "category_left",
)
STRUCTURE = ("feature", "threshold", "default_left", "special_left", "category_left")
# Bits of `special_left` a code can reach: special bins beyond it are refused by the layout.
SPECIAL_BITS = 62


@dataclass(frozen=True)
class Tree:
    feature: np.ndarray  # int32, LEAF at leaves
    threshold: np.ndarray  # int32
    default_left: np.ndarray  # bool
    left: np.ndarray  # int32, LEAF at leaves
    right: np.ndarray  # int32, LEAF at leaves
    value: np.ndarray  # float64: leaf value (0 at internal nodes)
    cover: np.ndarray  # float64: hessian sum
    special_left: np.ndarray  # int64: which special bins go left (bits, see the docstring)
    category_left: np.ndarray  # bool (nodes, width): which categories go left (set splits)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def depth(self) -> int:
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for node in range(self.n_nodes):
            if self.feature[node] != LEAF:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max()) if self.n_nodes else 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Tree:
        n = len(arrays["feature"])
        # Trees grown before categories were split by sets have none.
        categories = np.asarray(arrays.get("category_left", np.zeros((n, 0))), dtype=bool)
        if categories.ndim != 2:
            categories = categories.reshape(n, -1) if categories.size else np.zeros((n, 0), bool)
        return cls(
            feature=np.asarray(arrays["feature"], dtype=np.int32),
            threshold=np.asarray(arrays["threshold"], dtype=np.int32),
            default_left=np.asarray(arrays["default_left"], dtype=bool),
            left=np.asarray(arrays["left"], dtype=np.int32),
            right=np.asarray(arrays["right"], dtype=np.int32),
            value=np.asarray(arrays["value"], dtype=np.float64),
            cover=np.asarray(arrays["cover"], dtype=np.float64),
            special_left=np.asarray(arrays["special_left"], dtype=np.int64),
            category_left=categories,
        )

    def in_category(self, nodes: np.ndarray, code: np.ndarray) -> np.ndarray | None:
        """Per row, whether its `code` is in its node's left set (None: no set splits)."""
        return in_category(self.category_left, nodes, code)

    def digest(self) -> bytes:
        """SHA-256 over every array's dtype, shape and bytes (field order fixed)."""
        h = hashlib.sha256()
        for name in FIELDS:
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.digest()

    def route(
        self, codes: np.ndarray, missing: np.ndarray, start: np.ndarray | None = None
    ) -> np.ndarray:
        """The node each row ends at: a leaf, or a node not split yet (a growing tree).
        `missing` per feature: its missing code (-1: none). `start`: where each row already
        is (its node in an earlier stage of this tree, see `extends`); default the root."""
        node = np.zeros(len(codes), dtype=np.int64) if start is None else start.copy()
        active = np.arange(len(codes)) if self.n_nodes else np.zeros(0, dtype=np.int64)
        while len(active := active[self.feature[node[active]] != LEAF]):
            self._step(node, active, codes, missing)
        return node

    def _step(
        self, node: np.ndarray, rows: np.ndarray, codes: np.ndarray, missing: np.ndarray
    ) -> None:
        """Move `rows` (all at internal nodes) one level down, in place."""
        at = node[rows]
        f = self.feature[at]
        c = codes[rows, f]
        go_left = goes_left(c, missing[f], self.threshold[at], self.default_left[at],
                            self.special_left[at], self.in_category(at, c))  # fmt: skip
        node[rows] = np.where(go_left, self.left[at], self.right[at])

    def extends(self, earlier: Tree) -> bool:
        """Whether this tree is `earlier` grown further (some of its leaves split), so a row's
        node in `earlier` lies on its path here."""
        n = earlier.n_nodes
        if self.n_nodes < n:
            return False
        split = earlier.feature != LEAF
        return all(
            np.array_equal(getattr(self, k)[:n][split], getattr(earlier, k)[split])
            for k in (*STRUCTURE, "left", "right")
        )

    def predict(self, codes: np.ndarray, missing: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.value[self.route(codes, missing)]
        return out


def in_category(
    category_left: np.ndarray, nodes: np.ndarray, code: np.ndarray
) -> np.ndarray | None:
    """Whether each `code` is in the left set of its node (`nodes`, same shape); None when
    `category_left` has no columns (no set splits anywhere)."""
    width = category_left.shape[1]
    if width == 0:
        return None
    out: np.ndarray = category_left[nodes, np.clip(code, 0, width - 1)] & (code < width)
    return out


def goes_left(
    code: np.ndarray,
    missing: np.ndarray,
    threshold: np.ndarray,
    default_left: np.ndarray,
    special_left: np.ndarray,
    in_set: np.ndarray | None = None,
) -> np.ndarray:
    """Whether rows with these codes (of each node's feature, whose missing code is
    `missing`) go left at their nodes; `in_set`: whether each code is in its node's left
    category set (`in_category`), needed where a node splits by a set."""
    bit = missing - 1 - code  # a special bin's bit; regular codes reach none that is set
    special = (bit >= 0) & (bit <= SPECIAL_BITS)
    special_go = (special_left >> np.clip(bit, 0, SPECIAL_BITS)) & 1 == 1
    ordered = (code <= threshold) | (special & special_go)
    if in_set is not None:
        ordered = np.where(threshold == CATEGORY_SPLIT, in_set, ordered)
    out: np.ndarray = np.where(code == missing, default_left, ordered)
    return out


def check_structure(
    left: np.ndarray, right: np.ndarray, internal: np.ndarray, n_nodes: int
) -> None:
    """A stored tree's links (`internal`: which nodes split): each child after its parent,
    inside the tree, with one parent. Raises `ValueError`."""
    children = np.concatenate([left[internal], right[internal]])
    own = np.flatnonzero(internal)
    if np.any(children >= n_nodes) or np.any(children <= np.concatenate([own, own])):
        raise ValueError("a tree whose children do not come after their parent")
    if len(np.unique(children)) != len(children):
        raise ValueError("a tree node with two parents")


def check_thresholds(threshold: np.ndarray, category_left: np.ndarray, splits: np.ndarray) -> None:
    """The nodes where `splits`: a bin threshold (-1 and up) or a set split with its set of
    categories stored. Raises `ValueError`."""
    by_set = splits & (threshold == CATEGORY_SPLIT)
    if np.any(splits & (threshold < -1) & ~by_set):
        raise ValueError("a tree node with a negative threshold")
    if np.any(by_set) and category_left.shape[1] == 0:
        raise ValueError("a set split without its set of categories")


def chain_digest(previous: bytes, tree: Tree) -> bytes:
    """The digest of an ensemble after `tree`: it names every tree before, in order."""
    return hashlib.sha256(previous + tree.digest()).digest()


EMPTY_ENSEMBLE = hashlib.sha256(b"jointcredit-trees/1").digest()

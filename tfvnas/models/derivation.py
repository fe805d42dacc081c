"""Derivation: the genotype a search's gate tables describe, and random cells to hold it against.

`derive_top_k` and `derive_threshold` turn the searched gates' `log_alpha`
tables into a genotype. Both are pure functions of their arguments.
`random_genotype` draws a cell from the space `derive_top_k` derives in:
the baseline every search must beat.

References:
    - [Liu et al., 2019. DARTS: Differentiable Architecture Search](
      https://arxiv.org/abs/1806.09055)
    - [Ferianc et al., 2020. VINNAS: Variational Inference-based Neural
      Network Architecture Search](https://arxiv.org/abs/2007.06103)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tfvnas import checks
from tfvnas.models.genotype import (
    CELL_TYPES,
    Genotype,
    check_names,
    edge_index,
    num_edges,
    short_repr,
)

__all__ = ["derive_threshold", "derive_top_k", "random_genotype"]

_check_positive_int = checks.check_positive_int


# ---------------------------------------------------------------------------
# Derivation.


def _check_derive_args(log_alpha, op_names, nodes, threshold, exclude, active=None):
    nodes = _check_positive_int("nodes", nodes)
    names = check_names("op_names", op_names)
    if not names:
        raise ValueError(f"`op_names` must not be empty. Received: op_names={names}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(
            f"`op_names` must not contain duplicates (found {duplicated}). "
            f"Received: op_names={names}"
        )
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not math.isfinite(threshold)
    ):
        raise ValueError(
            f"`threshold` must be a finite number. Received: threshold={threshold!r}"
        )
    excluded = set(check_names("exclude", exclude))
    allowed = [k for k, n in enumerate(names) if n not in excluded]
    if not allowed:
        raise ValueError(
            f"`exclude` must leave at least one op of `op_names` to choose. "
            f"Received: exclude={sorted(excluded)}, op_names={names}"
        )
    expected = (num_edges(nodes), len(names))
    tables = _check_tables("log_alpha", log_alpha, expected, nodes)
    if active is None:
        live = {t: table < float(threshold) for t, table in tables.items()}
    else:
        live = {t: table > 0 for t, table in _check_tables("active", active, expected, nodes).items()}
    return tables, live, names, nodes, allowed


def _check_tables(what, tables, expected, nodes):
    if not isinstance(tables, Mapping):
        raise ValueError(
            f"`{what}` must be a dict mapping {list(CELL_TYPES)} to arrays. "
            f"Received: {short_repr(tables)}"
        )
    if set(tables) != set(CELL_TYPES):
        raise ValueError(
            f"`{what}` must have exactly the keys {list(CELL_TYPES)}. "
            f"Received keys: {sorted(tables, key=str)}"
        )
    out = {}
    for cell_type in CELL_TYPES:
        name = f"{what}[{cell_type!r}]"
        try:
            table = np.asarray(tables[cell_type], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"`{name}` must be an array of floats. Received: "
                f"{short_repr(tables[cell_type])}"
            ) from e
        if table.shape != expected:
            raise ValueError(
                f"`{name}` must have shape {expected} (num_edges(nodes={nodes}), "
                f"len(op_names)). Received: shape={table.shape}"
            )
        if np.isnan(table).any():
            raise ValueError(
                f"`{name}` must not contain NaN. Received NaN at (edge, op) "
                f"{[tuple(int(v) for v in ix) for ix in np.argwhere(np.isnan(table))]}"
            )
        out[cell_type] = table
    return out


def _node_edges(table: np.ndarray, node: int) -> np.ndarray:
    start = edge_index(node, 0)
    return table[start : start + 2 + node]


def _derive(tables, live, names, nodes, choose) -> Genotype:
    cells = {}
    for cell_type in CELL_TYPES:
        cell = []
        for i in range(nodes):
            rows = _node_edges(tables[cell_type], i)
            pairs = choose(rows, _node_edges(live[cell_type], i), cell_type, i)
            cell.append(tuple((names[k], j) for j, k in sorted(pairs)))
        cells[cell_type] = tuple(cell)
    concat = tuple(range(2, 2 + nodes))
    return Genotype(
        normal=cells["normal"],
        normal_concat=concat,
        reduce=cells["reduce"],
        reduce_concat=concat,
    ).validate(names)


def _too_few(cell_type, node, have, need, active):
    source = ("active gates" if active else "ops below the threshold")
    raise ValueError(
        f"Node {2 + node} of the {cell_type} cell has {have} incoming edge(s) with {source}; the derivation "
        f"needs {need}. A search keeps that many (its pruning holds a per-node floor, "
        f"`tfvnas.layers.gates.node_floor`); these tables come from gates pruned without it. "
        f"Received: {have} live edge(s) into node {2 + node}"
    )


def derive_top_k(
    log_alpha: Mapping[str, np.ndarray],
    op_names: Sequence[str],
    *,
    nodes: int,
    threshold: float = 3.0,
    k: int = 2,
    exclude: Iterable[str] = ("none",),
    active: Mapping[str, np.ndarray] | None = None,
) -> Genotype:
    """Derives a genotype keeping the `k` best incoming edges of every node.

    An op survives on an edge if it is live (active, when `active` is given;
    else `log_alpha < threshold`) and not in `exclude`. An edge's strength is
    the `log_alpha` of its best surviving op (lower is better). Every node
    keeps exactly `min(k, inputs)` distinct incoming edges, its strongest
    ones with a survivor, each with its best surviving op: the space
    `random_genotype` draws from. With `k=2` this is the DARTS rule. Ties go
    to the lower op index within an edge and to the lower input index
    between edges. Pairs are ordered by input index, and both cells
    concatenate all intermediate nodes.

    Args:
        log_alpha: Maps `"normal"` and `"reduce"` to float arrays of shape
            `(num_edges(nodes), len(op_names))`, rows in `edge_list` order.
        op_names: Names of the ops, in column order.
        nodes: Number of intermediate nodes per cell.
        threshold: Without `active`, ops with `log_alpha >= threshold` are
            pruned.
        k: Number of incoming edges per node, a positive int.
        exclude: Op names never chosen (the zero op).
        active: Maps the cell types to 0/1 arrays like `log_alpha`: the
            gates not pruned (a search's gate tables). A gate the per-node
            floor holds is active whatever its `log_alpha`.

    Returns:
        A validated `Genotype`.

    Raises:
        ValueError: If an argument is malformed (`k` or `nodes` not a
            positive int, `threshold` not finite, `op_names` empty or with
            duplicates, `exclude` excluding every op, a table missing a cell
            type, of the wrong shape or with NaN), or if a node has fewer
            edges with a survivor than it must keep (no refill from pruned
            gates: their `log_alpha` says how far each overshot, not what
            it is worth).
    """
    k = _check_positive_int("k", k)
    tables, live, names, nodes, allowed = _check_derive_args(
        log_alpha, op_names, nodes, threshold, exclude, active
    )

    def choose(rows, alive, cell_type, node):
        best = []  # (strength, input, op) of the best survivor of each edge
        for j in range(rows.shape[0]):
            survivors = [(rows[j, o], o) for o in allowed if alive[j, o]]
            if survivors:
                value, op = min(survivors)
                best.append((value, j, op))
        need = min(k, rows.shape[0])
        if len(best) < need:
            _too_few(cell_type, node, len(best), need, active is not None)
        return [(j, op) for _, j, op in sorted(best)[:need]]

    return _derive(tables, live, names, nodes, choose)


def derive_threshold(
    log_alpha: Mapping[str, np.ndarray],
    op_names: Sequence[str],
    *,
    nodes: int,
    threshold: float = 3.0,
    exclude: Iterable[str] = ("none",),
    active: Mapping[str, np.ndarray] | None = None,
    k: int = 1,
) -> Genotype:
    """Derives a genotype keeping every surviving (edge, op) pair.

    An op survives on an edge if it is live (active, when `active` is given;
    else `log_alpha < threshold`) and not in `exclude`. Each node keeps all
    its surviving pairs, so it may have any number of inputs and several ops
    on one edge, but it must have survivors on at least `min(k, inputs)`
    distinct edges. Pairs are ordered by input index, then by op order in
    `op_names`; both cells concatenate all intermediate nodes.

    Args:
        log_alpha, op_names, nodes, threshold, exclude, active: as in
            `derive_top_k`.
        k: the distinct inputs every node must have.

    Returns:
        A validated `Genotype`.

    Raises:
        ValueError: If an argument is malformed (see `derive_top_k`), or a
            node has fewer than `min(k, inputs)` edges with a survivor.
    """
    k = _check_positive_int("k", k)
    tables, live, names, nodes, allowed = _check_derive_args(
        log_alpha, op_names, nodes, threshold, exclude, active
    )

    def choose(rows, alive, cell_type, node):
        pairs = [(j, o) for j in range(rows.shape[0]) for o in allowed if alive[j, o]]
        have, need = len({j for j, _ in pairs}), min(k, rows.shape[0])
        if have < need:
            _too_few(cell_type, node, have, need, active is not None)
        return pairs

    return _derive(tables, live, names, nodes, choose)


# ---------------------------------------------------------------------------
# Random cells: the baseline every search must beat.


def random_genotype(
    op_names: Sequence[str],
    *,
    nodes: int,
    rng: np.random.Generator,
    k: int = 2,
    exclude: Iterable[str] = ("none",),
) -> Genotype:
    """Draws a genotype uniformly from the space the `top_k` rule derives cells in.

    Every node of both cells takes `k` distinct inputs drawn uniformly from
    the states before it (all of them if there are fewer), each with an op
    drawn uniformly from `op_names` minus `exclude`, as the random-search
    baselines of DARTS-space NAS do. Both cells concatenate all intermediate
    nodes.

    Args:
        op_names: the candidate operations.
        nodes: intermediate nodes per cell.
        rng: a `numpy.random.Generator` (the draw is a function of its state).
        k: inputs per node.
        exclude: ops never drawn.

    Returns:
        A validated `Genotype`.
    """
    nodes = _check_positive_int("nodes", nodes)
    k = _check_positive_int("k", k)
    excluded = set(check_names("exclude", exclude))
    ops = [op for op in check_names("op_names", op_names) if op not in excluded]
    if not ops:
        raise ValueError(f"`op_names` must hold an op not in `exclude`. Received: op_names={list(op_names)}")
    cells = {}
    for cell_type in CELL_TYPES:
        cell = []
        for i in range(nodes):
            inputs = sorted(rng.choice(2 + i, size=min(k, 2 + i), replace=False).tolist())
            cell.append(tuple((ops[int(rng.integers(len(ops)))], int(j)) for j in inputs))
        cells[cell_type] = tuple(cell)
    concat = tuple(range(2, 2 + nodes))
    return Genotype(
        normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"], reduce_concat=concat
    ).validate(ops)

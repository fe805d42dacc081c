"""Genotypes: the discrete cells found by the search, as data.

A DARTS cell has two input states (0 and 1: the outputs of the two previous
cells) and `nodes` intermediate nodes. Intermediate node `i` (0-based) is state
`2 + i` and may take inputs from any earlier state `0 .. 1 + i`. The cell
output is the concatenation of the states listed in its `concat`.

In the supernet every (node, earlier state) pair is an edge. Edges are
enumerated node by node, inputs in increasing order, so node `i`'s edges start
at `i * (i + 3) // 2` and a cell with `n` nodes has `n * (n + 3) // 2` edges
(14 for 4 nodes). `edge_index`, `num_edges` and `edge_list` are the one place
that encodes this order.

A `Genotype` is plain data: a frozen dataclass of `(op_name, input_index)`
pairs per node plus the concat list, for the normal and the reduction cell.
It round-trips through JSON (never `eval` or pickle), and the hash of its
canonical JSON names artefact folders.

How a genotype is derived from the searched gates, or drawn at random, is
`tfvnas.models.derivation`.

References:
    - [Liu et al., 2019. DARTS: Differentiable Architecture Search](
      https://arxiv.org/abs/1806.09055)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from tfvnas import checks, files

__all__ = [
    "CELL_TYPES",
    "Genotype",
    "edge_index",
    "edge_list",
    "num_edges",
    "parse_json",
]

CELL_TYPES = ("normal", "reduce")
"""Cell types of a genotype, in the order they appear in its data."""

GENOTYPE_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


# ---------------------------------------------------------------------------
# Small helpers.


_is_int = checks.is_int


def _is_seq(value: Any) -> bool:
    # Lists (from JSON) and tuples (from Python) are both accepted; str is a
    # sequence too but never a valid cell, node or pair.
    return isinstance(value, (list, tuple))


def short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_check_positive_int = checks.check_positive_int


def check_names(name: str, value: Any) -> list[str]:
    """Checks that `value` is an iterable of str (not a single str)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(
            f"`{name}` must be an iterable of op names (str), not a single "
            f"str. Received: {name}={value!r}"
        )
    names = list(value)
    for item in names:
        if not isinstance(item, str):
            raise ValueError(
                f"`{name}` must contain only op names (str). "
                f"Received: {name}={short_repr(names)}"
            )
    return names


# ---------------------------------------------------------------------------
# Edge enumeration.


def num_edges(nodes: int) -> int:
    """Returns the number of supernet edges of a cell with `nodes` nodes.

    Node `i` has `2 + i` incoming edges, so the total is
    `nodes * (nodes + 3) // 2`.

    Args:
        nodes: Number of intermediate nodes, a positive int.

    Returns:
        The number of edges (14 for 4 nodes).

    Raises:
        ValueError: If `nodes` is not a positive int.
    """
    nodes = _check_positive_int("nodes", nodes)
    return nodes * (nodes + 3) // 2


def edge_index(node: int, input: int) -> int:  # noqa: A002 - the field's name
    """Returns the supernet edge index of the edge `input -> node`.

    Args:
        node: 0-based intermediate node index (the node is state `2 + node`).
        input: Index of the input state, in `[0, 1 + node]`.

    Returns:
        `node * (node + 3) // 2 + input`.

    Raises:
        ValueError: If `node` is not a non-negative int, or `input` is not an
            int pointing to a state before the node.
    """
    if not _is_int(node) or node < 0:
        raise ValueError(
            f"`node` must be a non-negative int. Received: node={node!r}"
        )
    if not _is_int(input) or not 0 <= input <= 1 + node:
        raise ValueError(
            f"`input` must be an int in [0, {1 + node}] (a state before node "
            f"{node}). Received: input={input!r}"
        )
    return int(node) * (int(node) + 3) // 2 + int(input)


def edge_list(nodes: int) -> list[tuple[int, int]]:
    """Returns the `(node, input)` pair of every supernet edge, in edge order.

    Args:
        nodes: Number of intermediate nodes, a positive int.

    Returns:
        A list of `num_edges(nodes)` pairs; entry `e` is the edge with
        `edge_index(node, input) == e`.

    Raises:
        ValueError: If `nodes` is not a positive int.
    """
    nodes = _check_positive_int("nodes", nodes)
    return [(i, j) for i in range(nodes) for j in range(2 + i)]


# ---------------------------------------------------------------------------
# Genotype.


def _normalize_cell(name: str, cell: Any) -> tuple[tuple[tuple[str, int], ...], ...]:
    if not _is_seq(cell):
        raise ValueError(
            f"`{name}` must be a list of nodes, each a list of [op, input] "
            f"pairs. Received: {name}={short_repr(cell)}"
        )
    if not cell:
        raise ValueError(
            f"`{name}` must have at least one node. Received: {name}={cell!r}"
        )
    out = []
    for i, node in enumerate(cell):
        where = f"{name}[{i}]"
        if not _is_seq(node) or not node:
            raise ValueError(
                f"`{where}` must be a non-empty list of [op, input] pairs. "
                f"Received: {where}={short_repr(node)}"
            )
        pairs = []
        for p, pair in enumerate(node):
            pwhere = f"{where}[{p}]"
            if (
                not _is_seq(pair)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_int(pair[1])
            ):
                raise ValueError(
                    f"`{pwhere}` must be an [op, input] pair of a str and an "
                    f"int. Received: {pwhere}={short_repr(pair)}"
                )
            pairs.append((str(pair[0]), int(pair[1])))
        out.append(tuple(pairs))
    return tuple(out)


def _normalize_concat(name: str, concat: Any) -> tuple[int, ...]:
    if not _is_seq(concat) or not concat or not all(_is_int(c) for c in concat):
        raise ValueError(
            f"`{name}` must be a non-empty list of int node states. "
            f"Received: {name}={short_repr(concat)}"
        )
    return tuple(int(c) for c in concat)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """The discrete normal and reduction cells of a DARTS network.

    Each cell is a tuple with one entry per intermediate node; an entry is a
    tuple of `(op_name, input_index)` pairs, the node being the sum of
    `op_name(state[input_index])` over its pairs. Node `i` (0-based) is state
    `2 + i`; states 0 and 1 are the cell inputs. The cell output concatenates
    the states listed in `*_concat`.

    Lists are accepted wherever tuples are (so a hand-written or JSON-loaded
    genotype works) and are converted to tuples, which keeps instances
    immutable and hashable. The constructor checks the structure (types and
    nesting); `validate()` checks the meaning (op names, input indices and
    concat indices).

    Example:

    >>> g = Genotype(
    ...     normal=[[("sep_conv_3x3", 0), ("skip_connect", 1)]],
    ...     normal_concat=[2],
    ...     reduce=[[("max_pool_3x3", 0), ("max_pool_3x3", 1)]],
    ...     reduce_concat=[2],
    ... )
    >>> g.validate(["sep_conv_3x3", "skip_connect", "max_pool_3x3"]).nodes
    1

    Args:
        normal: Nodes of the normal (stride 1) cell.
        normal_concat: States concatenated into the normal cell's output.
        reduce: Nodes of the reduction (stride 2) cell.
        reduce_concat: States concatenated into the reduction cell's output.

    Raises:
        ValueError: If a cell is not a non-empty list of non-empty lists of
            `[str, int]` pairs, or a concat is not a non-empty list of ints.
    """

    normal: tuple[tuple[tuple[str, int], ...], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[tuple[str, int], ...], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        # Frozen dataclass: normalised values must go through object.__setattr__.
        for cell_type in CELL_TYPES:
            cell = _normalize_cell(cell_type, getattr(self, cell_type))
            object.__setattr__(self, cell_type, cell)
            concat_name = f"{cell_type}_concat"
            concat = _normalize_concat(concat_name, getattr(self, concat_name))
            object.__setattr__(self, concat_name, concat)

    # -- shape ---------------------------------------------------------------

    @property
    def normal_nodes(self) -> int:
        """Number of intermediate nodes of the normal cell."""
        return len(self.normal)

    @property
    def reduce_nodes(self) -> int:
        """Number of intermediate nodes of the reduction cell."""
        return len(self.reduce)

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes, when both cells have the same count.

        Raises:
            ValueError: If the normal and reduction cells differ in node count
                (use `normal_nodes` / `reduce_nodes` then).
        """
        if self.normal_nodes != self.reduce_nodes:
            raise ValueError(
                "`nodes` is defined only when both cells have the same number "
                "of nodes; use `normal_nodes` / `reduce_nodes`. Received: "
                f"normal_nodes={self.normal_nodes}, "
                f"reduce_nodes={self.reduce_nodes}"
            )
        return self.normal_nodes

    # -- validation ----------------------------------------------------------

    def validate(self, known_ops: Iterable[str] | None = None) -> Genotype:
        """Checks op names, input indices and concat indices.

        Args:
            known_ops: The op names allowed in the cells. Defaults to the
                names registered in `tfvnas.layers.registry` (imported only then;
                the message for another name then says how to register it).

        Returns:
            `self`, so that `Genotype.load(path).validate()` chains.

        Raises:
            ValueError: If an op is not in `known_ops`; an input index does
                not point to a state before its node; or a concat index is not
                an intermediate node of its cell (in `[2, 1 + nodes]`) or is
                repeated.
        """
        how_to_register = None
        if known_ops is None:
            from tfvnas.layers import registry as op_registry  # noqa: PLC0415 - keeps TensorFlow optional

            known_ops, how_to_register = op_registry.op_names(), op_registry.how_to_register
        known = set(check_names("known_ops", known_ops))

        for cell_type in CELL_TYPES:
            cell = getattr(self, cell_type)
            for i, node in enumerate(cell):
                for p, (op, inp) in enumerate(node):
                    where = f"{cell_type}[{i}][{p}]"
                    if op not in known:
                        raise ValueError(
                            f"`{where}` op must be one of the known ops "
                            f"{sorted(known)}. Received: op={op!r}"
                            + (f". {how_to_register(op)}" if how_to_register else "")
                        )
                    if not 0 <= inp <= 1 + i:
                        raise ValueError(
                            f"In the {cell_type} cell, the input of node "
                            f"{2 + i} (`{where}`) must be an earlier state, "
                            f"an int in [0, {1 + i}]. Received: input={inp}"
                        )
            concat_name = f"{cell_type}_concat"
            concat = getattr(self, concat_name)
            last = 1 + len(cell)
            if any(not 2 <= c <= last for c in concat):
                raise ValueError(
                    f"`{concat_name}` must list intermediate nodes of the "
                    f"{cell_type} cell, ints in [2, {last}]. "
                    f"Received: {concat_name}={list(concat)}"
                )
            if len(set(concat)) != len(concat):
                raise ValueError(
                    f"`{concat_name}` must not repeat a node. "
                    f"Received: {concat_name}={list(concat)}"
                )
        return self

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, list]:
        """Returns the genotype as JSON-ready nested lists.

        Returns:
            `{"normal": [[["sep_conv_3x3", 0], ...], ...], "normal_concat":
            [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}`.
        """
        out: dict[str, list] = {}
        for cell_type in CELL_TYPES:
            out[cell_type] = [
                [[op, inp] for op, inp in node] for node in getattr(self, cell_type)
            ]
            concat_name = f"{cell_type}_concat"
            out[concat_name] = list(getattr(self, concat_name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        """Builds a genotype from the output of `to_dict`.

        Only the structure is checked here; call `validate()` to check op
        names and indices.

        Args:
            d: A mapping with exactly the keys `normal`, `normal_concat`,
                `reduce` and `reduce_concat`.

        Returns:
            A `Genotype`.

        Raises:
            ValueError: If `d` is not a mapping, has missing or unknown keys,
                or its values do not have the genotype structure.
        """
        if not isinstance(d, Mapping):
            raise ValueError(
                f"A genotype must be a JSON object (dict) with keys "
                f"{list(GENOTYPE_KEYS)}. Received: {short_repr(d)}"
            )
        keys = set(d)
        missing = [k for k in GENOTYPE_KEYS if k not in keys]
        unknown = sorted((k for k in keys if k not in GENOTYPE_KEYS), key=str)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing: {missing}")
            if unknown:
                parts.append(f"unknown: {unknown}")
            raise ValueError(
                f"A genotype must have exactly the keys {list(GENOTYPE_KEYS)}. "
                f"Received keys: {sorted(keys, key=str)} ({'; '.join(parts)})"
            )
        return cls(**{k: d[k] for k in GENOTYPE_KEYS})

    def to_json(self, indent: int | None = 2) -> str:
        """Returns the genotype as JSON text (see `to_dict` for the schema).

        Args:
            indent: Passed to `json.dumps`.
        """
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Genotype:
        """Builds a genotype from the output of `to_json`.

        Args:
            text: JSON text.

        Returns:
            A `Genotype` (structure checked; call `validate()` for the rest).

        Raises:
            ValueError: If `text` is not valid JSON or not a genotype.
        """
        return cls.from_dict(parse_json(text, "`text`"))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the genotype as JSON to `path`, atomically.

        The text goes to a temporary file in the same directory, which then
        replaces `path`, so a reader never sees a half-written genotype.

        Args:
            path: Destination file. Its directory must exist.
        """
        files.atomic_write(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        """Reads a genotype written by `save`.

        Args:
            path: A JSON genotype file.

        Returns:
            A `Genotype` (structure checked; call `validate()` for the rest).

        Raises:
            ValueError: If the file is not valid JSON or not a genotype; the
                message names the file.
        """
        path = os.fspath(path)
        data = read_genotype_file(path)
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"Invalid genotype file {path!r}: {e}") from e

    def canonical_json(self) -> str:
        """Returns compact JSON with sorted keys: equal genotypes, equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self, length: int = 12) -> str:
        """Returns a hex prefix of the SHA-256 of `canonical_json()`.

        Used to name artefact folders, so it must not change between runs.

        Args:
            length: Number of hex digits, in `[1, 64]`.

        Raises:
            ValueError: If `length` is not an int in `[1, 64]`.
        """
        if not _is_int(length) or not 1 <= length <= 64:
            raise ValueError(
                f"`length` must be an int in [1, 64]. Received: length={length!r}"
            )
        digest = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
        return digest[: int(length)]

    # -- reporting -----------------------------------------------------------

    def op_histogram(self) -> dict[str, int]:
        """Returns how often each op is used over both cells, keys sorted."""
        counts: dict[str, int] = {}
        for cell_type in CELL_TYPES:
            for node in getattr(self, cell_type):
                for op, _ in node:
                    counts[op] = counts.get(op, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """Returns a human-readable multi-line description of both cells.

        Example:

        ```
        Genotype 1a2b3c4d5e6f
        normal cell (4 nodes):
          node 2 <- sep_conv_3x3(0), sep_conv_3x3(1)
          ...
          concat: 2, 3, 4, 5
        reduce cell (4 nodes):
          ...
        ```
        """
        lines = [f"Genotype {self.hash()}"]
        for cell_type in CELL_TYPES:
            cell = getattr(self, cell_type)
            lines.append(f"{cell_type} cell ({len(cell)} nodes):")
            for i, node in enumerate(cell):
                inputs = ", ".join(f"{op}({inp})" for op, inp in node)
                lines.append(f"  node {2 + i} <- {inputs}")
            concat = getattr(self, f"{cell_type}_concat")
            lines.append(f"  concat: {', '.join(str(c) for c in concat)}")
        return "\n".join(lines)


def read_genotype_file(path: str) -> Any:
    """The JSON value of the genotype file `path`.

    Raises:
        ValueError: one line naming the file when it is not UTF-8 JSON text
            (truncated, damaged).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"Genotype file {path!r} must be UTF-8 JSON text. Received: undecodable bytes "
                         f"({e.reason})") from e
    return parse_json(text, f"Genotype file {path!r}")


def parse_json(text: Any, source: str) -> Any:
    if not isinstance(text, (str, bytes, bytearray)):
        raise ValueError(
            f"{source} must be JSON text (str). Received: {short_repr(text)}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        near = e.doc[max(0, e.pos - 20) : e.pos + 20]
        raise ValueError(
            f"{source} must be valid JSON. Received: {e.msg} at line "
            f"{e.lineno}, column {e.colno} (char {e.pos}), near {near!r}"
        ) from e

"""Perturbation-based selection: the cell chosen by what masking each op costs the trained supernet.

The gates' `log_alpha` says how much noise the likelihood tolerates on an
op's output, which is not the same as what the op is worth to the
prediction. Wang et al. (2021) choose instead by perturbation: on every
edge, the op whose removal costs the supernet the most validation
accuracy; then, for every node, the incoming edges whose removal costs
the most. Here an op is removed by masking its gate (exactly zero), the
supernet runs at its gate means with its batch norms' moving statistics,
and accuracy is measured on a fixed set of validation images.

One difference from the paper: Wang et al. decide one edge at a time and
fine-tune the supernet between decisions; this is the one-shot form (every
decision measured on the supernet as trained, then the op choices fixed
before the edges are chosen). It costs one evaluation per live (edge, op)
pair on edges with a choice to make (two live ops or more), one per live
edge of nodes with more live edges than they keep, two more for the
supernet as trained and as reduced, and no training. A decision with no
alternative (an edge's only live op, a node's only `k` live edges) is
taken without a measurement: masking cannot change it.

References:
    - Wang, Cheng, Chen, Tang, Hsieh. "Rethinking Architecture Selection in
      Differentiable NAS." ICLR 2021.
"""

import numpy as np

from tfvnas.models import genotype as genotype_lib


def perturbation_genotype(model, accuracy, k=None):
    """The genotype chosen by perturbation on a trained `Supernet`, and what each decision measured.

    Args:
        model: a trained `tfvnas.models.supernet.Supernet` (its `step_ops`
            pinned, so masking a gate changes a value, not the traced
            computation).
        accuracy: a callable returning the supernet's validation accuracy
            as it is now (its gates' `active` tables as set).
        k: inputs per node (default the model's `top_k`).

    Returns:
        `(genotype, record)`: the `Genotype`, and a dict with the base
        accuracy, the accuracy of the supernet reduced to the chosen ops
        (`reduced_accuracy`), the number of evaluations (`evaluations`)
        and, per cell type, the accuracy drop of masking every live op of
        an edge with two live ops or more (`op_drops`, shape (edges, ops))
        and every live edge of a node with more than `k` of them, once
        reduced to its chosen op (`edge_drops`, (edges,)); NaN where
        nothing was measured (not live, or no alternative). The gate
        tables are left as they were.
    """
    k = model.top_k if k is None else k
    names = list(model.op_names)
    countable = np.array([n != "none" for n in names])
    saved = {t: g.active.numpy().copy() for t, g in model.gates.items()}
    evaluations = 0

    def measure():
        nonlocal evaluations
        evaluations += 1
        return float(accuracy())

    try:
        base = measure()
        record = {"base_accuracy": base, "op_drops": {}, "edge_drops": {}}
        chosen = {}
        for cell_type, gates in model.gates.items():
            live = (saved[cell_type] > 0) & countable[None, :]
            op_drops = np.full(live.shape, np.nan)
            best = {}
            for e in np.flatnonzero(live.any(axis=1)):
                ops = np.flatnonzero(live[e])
                if len(ops) == 1:  # the edge's only live op: nothing to choose
                    best[int(e)] = int(ops[0])
                    continue
                for o in ops:
                    trial = saved[cell_type].copy()
                    trial[e, o] = 0.0
                    gates.active.assign(trial)
                    op_drops[e, o] = base - measure()
                # The edge reduced to its op whose masking costs the most.
                best[int(e)] = int(ops[np.argmax(op_drops[e, ops])])
            gates.active.assign(saved[cell_type])
            reduced = np.zeros_like(saved[cell_type])
            for e, o in best.items():
                reduced[e, o] = 1.0
            record["op_drops"][cell_type] = op_drops.round(6).tolist()
            chosen[cell_type] = (best, reduced)
        # The edges, with both cell types reduced to their chosen ops.
        for gates_type, (_, reduced) in chosen.items():
            model.gates[gates_type].active.assign(reduced)
        reduced_base = measure()
        record["reduced_accuracy"] = reduced_base
        for cell_type, (best, reduced) in chosen.items():
            edge_drops = np.full(reduced.shape[0], np.nan)
            for e in _edges_with_a_choice(best, model.nodes, k):
                trial = reduced.copy()
                trial[e] = 0.0
                model.gates[cell_type].active.assign(trial)
                edge_drops[e] = reduced_base - measure()
            model.gates[cell_type].active.assign(reduced)
            record["edge_drops"][cell_type] = edge_drops.round(6).tolist()
        record["evaluations"] = evaluations
    finally:
        for cell_type, values in saved.items():
            model.gates[cell_type].active.assign(values)
    genotype = _genotype(chosen, record, names, model.nodes, k)
    return genotype, record


def _nodes(best, nodes, k):
    """Per node `i`: `(i, its first edge's index, the inputs whose edge is live (a key of `best`), how many it
    keeps)`."""
    for i in range(nodes):
        start = genotype_lib.edge_index(i, 0)
        yield i, start, [j for j in range(2 + i) if start + j in best], min(k, 2 + i)


def _edges_with_a_choice(best, nodes, k):
    """The live edges of the nodes that have more of them than the `k` they keep."""
    return [start + j for _, start, live, need in _nodes(best, nodes, k) if len(live) > need for j in live]


def _genotype(chosen, record, names, nodes, k):
    """Per node, the `k` live edges whose masking costs the most, each with its chosen op."""
    cells = {}
    for cell_type in genotype_lib.CELL_TYPES:
        best, _ = chosen[cell_type]
        drops = record["edge_drops"][cell_type]
        cell = []
        for i, start, live, need in _nodes(best, nodes, k):
            if len(live) < need:
                raise ValueError(
                    f"Node {2 + i} of the {cell_type} cell has {len(live)} live incoming edge(s); perturbation "
                    f"selection needs {need}. Received: live edges {live}")
            if len(live) > need:  # the `need` edges whose masking costs the most
                live = sorted(sorted(live, key=lambda j: (-drops[start + j], j))[:need])
            cell.append(tuple((names[best[start + j]], j) for j in live))
        cells[cell_type] = tuple(cell)
    concat = tuple(range(2, 2 + nodes))
    return genotype_lib.Genotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"],
                                 reduce_concat=concat)

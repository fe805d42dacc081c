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
pair and one per live edge, and no training.

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
        accuracy and, per cell type, the accuracy drop of masking every live
        op (`op_drops`, shape (edges, ops), NaN where not live) and every
        live edge once reduced to its chosen op (`edge_drops`, (edges,)).
        The gate tables are left as they were.
    """
    k = model.top_k if k is None else k
    names = list(model.op_names)
    countable = np.array([n != "none" for n in names])
    saved = {t: g.active.numpy().copy() for t, g in model.gates.items()}
    try:
        base = float(accuracy())
        record = {"base_accuracy": base, "op_drops": {}, "edge_drops": {}}
        chosen = {}
        for cell_type, gates in model.gates.items():
            active = saved[cell_type] > 0
            op_drops = np.full(active.shape, np.nan)
            for e, o in np.argwhere(active & countable[None, :]):
                trial = saved[cell_type].copy()
                trial[e, o] = 0.0
                gates.active.assign(trial)
                op_drops[e, o] = base - float(accuracy())
            gates.active.assign(saved[cell_type])
            # Each live edge reduced to its op whose masking costs the most.
            best = {int(e): int(np.nanargmax(row)) for e, row in enumerate(op_drops) if not np.all(np.isnan(row))}
            reduced = np.zeros_like(saved[cell_type])
            for e, o in best.items():
                reduced[e, o] = 1.0
            record["op_drops"][cell_type] = op_drops.round(6).tolist()
            chosen[cell_type] = (best, reduced)
        # The edges, with both cell types reduced to their chosen ops.
        for gates_type, (_, reduced) in chosen.items():
            model.gates[gates_type].active.assign(reduced)
        reduced_base = float(accuracy())
        record["reduced_accuracy"] = reduced_base
        for cell_type, (best, reduced) in chosen.items():
            edge_drops = np.full(reduced.shape[0], np.nan)
            for e in best:
                trial = reduced.copy()
                trial[e] = 0.0
                model.gates[cell_type].active.assign(trial)
                edge_drops[e] = reduced_base - float(accuracy())
            model.gates[cell_type].active.assign(reduced)
            record["edge_drops"][cell_type] = edge_drops.round(6).tolist()
    finally:
        for cell_type, values in saved.items():
            model.gates[cell_type].active.assign(values)
    genotype = _genotype(chosen, record, names, model.nodes, k)
    return genotype, record


def _genotype(chosen, record, names, nodes, k):
    """Per node, the `k` live edges whose masking costs the most, each with its chosen op."""
    cells = {}
    for cell_type in genotype_lib.CELL_TYPES:
        best, _ = chosen[cell_type]
        drops = record["edge_drops"][cell_type]
        cell = []
        for i in range(nodes):
            start = genotype_lib.edge_index(i, 0)
            live = [(-drops[start + j], j) for j in range(2 + i) if start + j in best]
            need = min(k, 2 + i)
            if len(live) < need:
                raise ValueError(
                    f"Node {2 + i} of the {cell_type} cell has {len(live)} live incoming edge(s); perturbation "
                    f"selection needs {need}. Received: live edges {[j for _, j in live]}")
            keep = sorted(j for _, j in sorted(live)[:need])
            cell.append(tuple((names[best[start + j]], j) for j in keep))
        cells[cell_type] = tuple(cell)
    concat = tuple(range(2, 2 + nodes))
    return genotype_lib.Genotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"],
                                 reduce_concat=concat)

"""Where a supernet node's energy comes from: each gated candidate's share, by op type and input kind.

A gate's `log_alpha` is its signal-to-noise ratio, and the likelihood's
cost for a gate's noise grows with the energy (mean square) of the gated
output. If the candidates of a node differ in scale, `log_alpha` ranks them
by their share of the node's energy, a property of the supernet, not of what
an op is worth. `node_energy` measures it: for every node of every cell,
the mean square of every active gated output `theta_k * o_k(x)` and its
share of the node's total, and `energy_summary` averages those shares by
op type and by input kind (one of the cell's two inputs, or an intermediate
node), relative to an equal share (1.0: as much as every term of its node
on average).

The pass runs the supernet as a training step sees it (batch statistics in
the batch norms) with every gate at its mean and no gate noise; the model's
moving statistics and random states are left as they were.
"""

import numpy as np
import tensorflow as tf

from tfvnas.layers import ops as ops_lib
from tfvnas.models import network


def node_energy(model, images):
    """Every active gated output's energy and share of its node, in every cell of `model`.

    Args:
        model: a built `tfvnas.models.supernet.Supernet`.
        images: raw images, as the model takes them (one batch).

    Returns:
        A list of dicts, one per active (cell, edge, op): `cell`,
        `cell_type`, `node` (0-based), `input` (state index), `input_kind`
        ('cell input' for states 0 and 1, else 'node'), `op`, `theta`,
        `energy` (mean square of `theta * o(x)`), `share` (of the node's
        summed energies), `terms` (the node's active gated outputs) and
        `state_energy` (the node state's mean square).
    """
    saved = [v.numpy() for v in model.non_trainable_variables]
    try:
        return _energies(model, images)
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


def _energies(model, images):
    images = tf.convert_to_tensor(images)
    x = model.normalise(tf.cast(network.as_images(images, model.input_shape_built), model.compute_dtype))
    for layer in model.stem:
        x = ops_lib.apply_layer(layer, x, True)
    gates = {t: g(training=False) for t, g in model.gates.items()}
    aux = None if model.aux_skip_weight is None else float(model.aux_skip_weight.numpy())
    records = []
    s0 = s1 = x
    for cell in model.cells:
        theta = gates[cell.plan.cell_type][0].numpy()
        states = [cell.preprocess0(s0, training=True), cell.preprocess1(s1, training=True)]
        for node in range(cell.nodes):
            total, terms = None, []
            for e, (n, inp, op_names) in enumerate(cell.edges):
                if n != node:
                    continue
                edge = cell.edge_layers[e]
                for k, name in enumerate(op_names):
                    if theta[e, k] == 0.0:
                        continue
                    out = theta[e, k] * ops_lib.apply_layer(edge.candidates[k], states[inp], True)
                    terms.append({"cell": cell.plan.index, "cell_type": cell.plan.cell_type, "node": node,
                                  "input": inp, "input_kind": "cell input" if inp < 2 else "node", "op": name,
                                  "theta": float(theta[e, k]), "energy": float(tf.reduce_mean(tf.square(out)))})
                    total = out if total is None else total + out
                if aux and not (cell.plan.reduction and inp < 2):
                    total = aux * states[inp] if total is None else total + aux * states[inp]
            if total is None:  # every gate of the node pruned
                total = tf.zeros_like(states[-1])
            summed = sum(t["energy"] for t in terms)
            state_energy = float(tf.reduce_mean(tf.square(total)))
            for t in terms:
                t.update(share=t["energy"] / summed if summed else 0.0, terms=len(terms), state_energy=state_energy)
            records += terms
            states.append(total)
        s0, s1 = s1, tf.concat([states[i] for i in cell.concat], axis=-1)
    return records


def energy_summary(records):
    """Mean relative share (share x terms of its node; 1.0 is an equal share) by `(op, input_kind)`.

    Returns:
        A dict `{op: {input_kind: mean relative share}}` over the records
        (both cell types), and under the key `"state_energy"`, the mean node
        state energy per node index.
    """
    out = {}
    for r in records:
        out.setdefault(r["op"], {}).setdefault(r["input_kind"], []).append(r["share"] * r["terms"])
    summary = {op: {kind: float(np.mean(v)) for kind, v in kinds.items()} for op, kinds in sorted(out.items())}
    by_node = {}
    for r in records:
        by_node.setdefault((r["cell"], r["node"]), r["state_energy"])
    nodes = sorted({n for _, n in by_node})
    summary["state_energy"] = {n: float(np.mean([v for (c, m), v in by_node.items() if m == n])) for n in nodes}
    return summary

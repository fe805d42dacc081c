"""A replica's view of the distribution strategy: its id, and its own copy of a mirrored variable.

Used by the layers' noise (`tfvnas.layers.noise`), the supernet's shared edge
functions and the fused optimizer updates, which all run per replica.
"""

import tensorflow as tf


def replica_id():
    """The id of the current replica in its sync group (0 outside a replica context)."""
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def replica_local(variable):
    """The copy of a distributed variable that this replica holds (a plain `tf.Variable`); others as they are.

    What a shared `tf.function` must take instead of the distributed
    variable: TensorFlow traces a distributed variable argument by its
    shape and dtype only and captures the variable of the first call, so a
    later call with another variable of that shape would compute with (and
    assign to) the first one. The copy is a plain variable, passed to the
    function like any other.
    """
    if isinstance(variable, tf.distribute.DistributedValues) and hasattr(variable, "_get_on_device_or_primary"):
        return variable._get_on_device_or_primary()
    return variable

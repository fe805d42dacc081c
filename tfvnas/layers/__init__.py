"""The Keras layers of the method: candidate operations, variational weights, the gate tables and the supernet's gated edge."""

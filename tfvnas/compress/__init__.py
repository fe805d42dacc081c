"""From a trained variational network to a small standard one: strip, dead-channel elimination, parameter and MAC counts."""

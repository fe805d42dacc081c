"""The models and what describes them: the one cell topology, the final `Network`, the `Supernet`, genotypes and the zoo."""

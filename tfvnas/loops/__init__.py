"""The distributed training loops: the shared loop and checkpoints, the optimisers, search, training, tuning, summaries."""

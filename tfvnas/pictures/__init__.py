"""Pictures: cell drawings, charts of gates, sparsity and results, and `tfvnas show`."""

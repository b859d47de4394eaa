"""A run's assembly, the ignite engines and handlers, evaluation, checkpoints, weight averages, stopping, optimizers,
cross-validation."""

"""What a run records: the run folder, its history, report, notes, notifications, TensorBoard pictures, MLflow."""

"""Predictions out: test-time augmentation, prediction files, submissions, stacking, output-command safety."""

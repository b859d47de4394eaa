"""Low-level helpers every layer may use: processes (`ignite.distributed`) and atomic file writes."""

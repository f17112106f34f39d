"""The gate's use of statistics and storage: per-test settings, a test's checks against its baseline, and
recording a session as the new baselines (see docs/regression.md and docs/CONTRIBUTING-LAYERS.md)."""

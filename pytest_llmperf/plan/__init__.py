"""The capacity planner: predict TP and PP latency on a link you do not own from a single-GPU run you do.

``links`` (named links and their sources), ``model`` (the analytical communication and pipeline arithmetic),
``data`` (reading results files), ``predict`` (compute + model), ``validate`` (cross-link validation on the
study's files), ``whatif`` (best strategy per link and the concurrency where PP overtakes TP).
See docs/planner.md.
"""

__all__: list[str] = []

"""Reproducible benchmarks of growsearch: ``python -m benchmarks.<name> [--quick|--full]``.

seed_experiment, search_vs_scratch, overhead, lineage_scale and gpu_overhead; see README.md for
what each measures and RESULTS.md for the figures.
"""

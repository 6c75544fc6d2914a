"""QR Track's benchmarks: `python bench/run.py` measures the app through HTTP against baselines in the same run."""

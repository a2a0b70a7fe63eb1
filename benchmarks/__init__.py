"""The benchmarks: each script writes benchmarks/reports/<name>.json and .md. Run them as
modules from the repository root (`.venv/bin/python -m benchmarks.search_benchmark --help`);
benchmarks/harness.py holds what they share."""

"""Micro-benchmarks (run as modules: ``python -m bench.esp_micro``)."""

"""Fenliu's benchmarks: ``python -m bench`` runs every ``bench_*.py`` here (``make bench``)."""

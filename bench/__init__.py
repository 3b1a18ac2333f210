"""Benchmarks at national scale: ingest, matching and the API against their baselines.

``make bench`` (``python -m bench.run --scale full``) builds the data once (cached under
``bench/data/``), creates a scratch PostgreSQL database, runs every measurement in a subprocess of
its own (so peak RSS is per measurement) and writes ``bench/results/latest.json`` and
``bench/results/latest.md``. ``make bench-smoke`` runs the same harness on 10,000 rows.

Parts (each ``python -m bench.<part>``): :mod:`bench.setup` (partners, the fresh month through the
real pipeline, twelve months of history in SQL), :mod:`bench.ingest`, :mod:`bench.naive`,
:mod:`bench.copy_floor`, :mod:`bench.matching`, :mod:`bench.sql_baseline`, :mod:`bench.api`
and :mod:`bench.profile`. What they print and store is counts, timings and sizes only.
"""

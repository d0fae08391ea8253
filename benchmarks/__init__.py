"""gpudp's benchmark suite: how close each operator comes to the machine's memory bandwidth.

Run it from the repository root with ``python -m benchmarks`` (or ``python -m gpudp bench``); see
``python -m benchmarks --help``. Modules: :mod:`~benchmarks.harness` (timing, bandwidth probe),
:mod:`~benchmarks.cases` and :mod:`~benchmarks.cases_smoke` (what is timed, and the byte models),
:mod:`~benchmarks.baselines` (NumPy / CuPy / JAX / cupyx versions of the same computations),
:mod:`~benchmarks.jax_smoke` (an independent JAX implementation of the smoke simulation, DESIGN.md §6),
:mod:`~benchmarks.suite` (the run) and :mod:`~benchmarks.report` (table, JSON, Markdown, PNG).
``device_check.sh`` runs the GPU tests, the suite and the demos on a GPU machine;
:mod:`~benchmarks.smoke_check` compares the smoke demo's loss histories across backends and with JAX.
"""

"""gpudp's benchmark suite: how close each operator comes to the machine's memory bandwidth.

Run it from the repository root with ``python -m benchmarks`` (or ``python -m gpudp bench``); see
``python -m benchmarks --help``. Modules: :mod:`~benchmarks.harness` (timing, bandwidth probe),
:mod:`~benchmarks.cases` (what is timed, and the byte models), :mod:`~benchmarks.baselines` (NumPy / CuPy /
JAX / cupyx versions of the same computations), :mod:`~benchmarks.suite` (the run) and
:mod:`~benchmarks.report` (table, JSON, Markdown, PNG). ``device_check.sh`` runs the GPU tests and the suite
on a GPU machine.
"""

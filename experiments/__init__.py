"""The accuracy experiments behind docs/results/: one module per table or figure.

Each is run from the repository root as ``python -m experiments.NAME`` (``experiments.figures.NAME``
for the paper's figures, ``experiments.parity.NAME`` for the PyTorch reference). Their shared
helpers are in :mod:`experiments.common`; their records are under ``experiments/results/``.
The speed benchmarks are in ``benchmarks/``.
"""

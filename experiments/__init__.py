"""The accuracy experiments behind docs/results/: one module per table or figure.

Each is run from the repository root as ``python -m experiments.NAME`` (``experiments.figures.NAME``
for the paper's figures, ``experiments.parity.NAME`` for the PyTorch reference). The paper's
tables are :mod:`experiments.table1`, :mod:`~experiments.table2` and :mod:`~experiments.table6`,
run in order by :mod:`experiments.paper_tables` over the runner they share,
:mod:`experiments.tables`; :mod:`experiments.gpu_window` is one GPU job's worth of them. Their
protocols are :mod:`absgd_jax.train.protocols`; the other experiments' shared helpers are in
:mod:`experiments.common`; every record is under ``experiments/results/``. The speed benchmarks
are in ``benchmarks/``.
"""

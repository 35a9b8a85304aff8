"""The paper's figures, redrawn: ``python -m experiments.figures.NAME`` (PNGs beside them)."""

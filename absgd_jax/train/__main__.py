"""``python -m absgd_jax.train`` is the ``absgd-train`` command line."""

import sys

from absgd_jax.train.cli import main

sys.exit(main())

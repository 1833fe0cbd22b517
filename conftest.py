"""Repository-wide pytest setup: notebooks and tests run at the smoke budget unless told otherwise.

Set here (not only in .ci/run) so that plain `pytest` is the whole test command; the notebook
kernels that nbval starts inherit these variables.
"""

import os

os.environ.setdefault("SSL_BUDGET", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")

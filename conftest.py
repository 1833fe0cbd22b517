"""Repository-wide pytest setup: notebooks and tests run at the smoke budget unless told otherwise.

Figures go to a temporary folder (SSL_FIGURES_DIR). Set here (not only in .ci/run) so that plain `pytest` is the whole test command; the notebook
kernels that nbval starts inherit these variables.
"""

import os
import tempfile

os.environ.setdefault("SSL_BUDGET", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# Notebooks save figures through visualize.figures_dir(): at the smoke budget they go to a temporary folder,
# not over the committed figures/ (which hold the outputs of cpu- or gpu-budget runs).
os.environ.setdefault("SSL_FIGURES_DIR", tempfile.mkdtemp(prefix="ssl_minimal_figures_"))

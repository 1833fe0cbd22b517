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


def pytest_configure(config):
    """`pytest` runs every notebook under nbval (lax: only cells marked NBVAL_CHECK_OUTPUT compare their
    output) in this environment. Set here rather than in pyproject's addopts, so that pytest still starts
    where nbval is not installed (an instructor with only the `course` extra)."""
    if config.pluginmanager.hasplugin("nbval"):
        if not (config.option.nbval or config.option.nbval_lax):
            config.option.nbval_lax = True
        config.option.nbval_current_env = True


def pytest_report_header(config):
    if not config.pluginmanager.hasplugin("nbval"):
        return "nbval is not installed: the notebooks are not tested (pip install -e '.[dev]')"

"""What a student sees first in every notebook: no warning with the author's paths, no smoke figures over the
committed ones, and a visible line when the notebooks fall back from CIFAR-10 to the embedded shapes."""

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_importing_the_library_in_a_notebook_without_ipywidgets_does_not_warn():
    """tqdm.auto, inside a Jupyter kernel without ipywidgets, warns "IProgress not found" and prints the path of
    the installed tqdm; the library takes tqdm's text bar directly in that case."""
    code = (
        "import sys, types, warnings\n"
        "sys.modules['ipykernel.zmqshell'] = types.ModuleType('ipykernel.zmqshell')  # what tqdm looks for\n"
        "sys.modules['ipywidgets'] = None                                             # not installed\n"
        "warnings.simplefilter('always')\n"
        "import ssl_minimal, ssl_minimal.training\n"
        "from ssl_minimal import data, evaluate, visualize\n"
        "print(ssl_minimal.training.tqdm.__module__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPOSITORY)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "IProgress" not in result.stderr and "TqdmWarning" not in result.stderr, result.stderr
    assert result.stdout.strip() == "tqdm.std"


def test_smoke_runs_save_figures_outside_the_committed_figures(tmp_path, monkeypatch, capsys):
    from ssl_minimal import get_budget, visualize
    monkeypatch.delenv("SSL_FIGURES_DIR", raising=False)
    (tmp_path / "figures").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")                   # where a notebook runs
    monkeypatch.setenv("SSL_BUDGET", "smoke")
    folder = visualize.figures_dir()
    assert folder == visualize.SMOKE_FIGURES_DIR and folder.is_dir()
    assert str(folder) in capsys.readouterr().out              # said where, in one line
    assert visualize.figures_dir(get_budget("smoke")) == visualize.SMOKE_FIGURES_DIR
    capsys.readouterr()
    monkeypatch.setenv("SSL_BUDGET", "cpu")
    assert visualize.figures_dir() == Path("../figures") and capsys.readouterr().out == ""
    assert visualize.figures_dir("smoke") == visualize.SMOKE_FIGURES_DIR
    monkeypatch.setenv("SSL_FIGURES_DIR", str(tmp_path / "asked"))
    assert visualize.figures_dir("smoke") == tmp_path / "asked"   # asked for: then that folder, at any budget


def test_the_shapes_fallback_is_said_in_the_output(tmp_path, monkeypatch, capsys):
    from ssl_minimal import data
    monkeypatch.delenv("SSL_DATA_DIR", raising=False)
    assert data.course_dataset(tmp_path) == "shapes"
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "CIFAR-10 was not found" in said and "shapes" in said and "SSL_DATA_DIR" in said
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg.npz").write_bytes(b"")
    assert data.course_dataset(tmp_path) == "cifar10" and capsys.readouterr().out == ""

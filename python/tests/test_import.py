"""Importing unrollopt with a torch other than the one it was built against."""

import subprocess
import sys

import torch

import unrollopt


def test_build_info_names_the_running_torch():
    from unrollopt import _build_info

    assert _build_info.TORCH_VERSION == torch.__version__
    assert _build_info.VERSION == unrollopt.__version__ == unrollopt._C.version()


def test_mismatched_torch_raises_import_error_saying_how_to_rebuild():
    code = "import torch; torch.__version__ = '0.0.1+other'; import unrollopt"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "built against torch" in result.stderr and "0.0.1+other" in result.stderr
    assert "--no-build-isolation" in result.stderr


def test_installed_metadata_pins_the_torch_built_against():
    """The wheel's Requires-Dist is torch==<the version built against>
    (tools/torch_pin.py), so installing it never brings another torch."""
    from importlib.metadata import requires

    from unrollopt import _build_info

    pins = [r for r in requires("unrollopt") or [] if r.replace(" ", "").startswith("torch")]
    assert pins == [f"torch=={_build_info.TORCH_VERSION.split('+')[0]}"], requires("unrollopt")

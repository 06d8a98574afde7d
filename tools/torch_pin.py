"""A scikit-build-core metadata provider (pyproject.toml): the wheel's
dependencies, with torch pinned to the version the extension is being built
against. The extension links that torch's C++ library, so it imports with it
only; without the pin, installing the wheel could bring another torch."""

from __future__ import annotations


def dynamic_metadata(field: str, settings: dict) -> list[str]:
    if field != "dependencies" or settings:
        raise RuntimeError("torch_pin provides the dependencies field and takes no settings")
    import torch

    # The public version: 2.13.0 for 2.13.0+cpu (the local label names the
    # wheel variant, which pip chooses by index, not by version).
    return [f"torch=={torch.__version__.split('+')[0]}"]

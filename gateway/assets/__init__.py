"""Where the templates, static files and migrations are: inside the package, or beside it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# A wheel (pip install ., the Docker image) carries the repository's top-level templates/,
# static/ and migrations/ as package data under gateway/assets/ (pyproject.toml maps them).
# A source checkout, or an editable install, has them at the top of the repository.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def directory(name: str) -> Path:
    """The directory of `templates`, `static` or `migrations`, wherever the gateway runs from."""
    packaged = Path(str(files(__name__).joinpath(name)))
    if packaged.is_dir():
        return packaged
    return SOURCE_ROOT / name

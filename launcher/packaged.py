"""Files that ship inside the gpujob package, found through ``importlib.resources``.

The payload (``launcher.payloads``), boot templates (``launcher.templates``), the price
snapshot (``launcher.catalog/data``), the model cost table and the calibration points
(``launcher.estimate``) resolve the same way from a wheel, a pipx install, an editable
install and a checkout on PYTHONPATH (see ``launcher/__init__.py``). Nothing here reads a
path relative to the repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from launcher.errors import GpujobError

PAYLOAD_PACKAGE = "launcher.payloads"
TEMPLATE_PACKAGE = "launcher.templates"


def data_path(package: str, *parts: str) -> Path:
    """A real file-system path for packaged data ``parts`` under ``package``.

    pip installs packages as plain files, so the traversable is a Path; payload upload and the
    catalog cache need one. Raises GpujobError when it is missing (a broken install).
    """
    item = resources.files(package)
    for part in parts:
        item = item / part
    if not isinstance(item, Path) or not item.exists():
        raise GpujobError(f"{'/'.join(parts) or 'the folder'} is missing from the installed {package}",
                          "reinstall gpujob (pip install --force-reinstall gpujob)")
    return item


def payload_dir() -> Path:
    """The folder shipped to the machine as ``payloads/`` (train.py runs from it, without gpujob)."""
    return data_path(PAYLOAD_PACKAGE)


def payload_script() -> Path:
    """payloads/train.py: the trainer the CPU probe and the local provider run."""
    return data_path(PAYLOAD_PACKAGE, "train.py")


def template_text(name: str) -> str:
    """A boot script template (e.g. ``aws-user-data.sh``) as text."""
    return data_path(TEMPLATE_PACKAGE, name).read_text(encoding="utf-8")

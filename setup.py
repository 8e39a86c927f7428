"""The one packaging rule pyproject.toml cannot express next to package discovery.

The repository keeps the payload and the boot templates in top-level ``payloads/`` and
``templates/`` folders; the wheel installs them as ``launcher.payloads`` and
``launcher.templates`` so site-packages gets no generic top-level names
(launcher/__init__.py binds the same names in a checkout). Everything else is in
pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {f"launcher.{name}": name for name in ("payloads", "templates")}  # = launcher.CHECKOUT_FOLDERS

setup(packages=find_packages(include=["launcher", "launcher.*"]) + sorted(MAPPED), package_dir=MAPPED)

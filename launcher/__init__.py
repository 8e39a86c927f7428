"""gpujob: estimate, launch, stream and tear down GPU training jobs.

Importing this package must stay cheap: no boto3, google-cloud or torch here.

The payload and the boot templates are the subpackages ``launcher.payloads`` and
``launcher.templates``. An installed gpujob (wheel, pipx) holds them as real subfolders
(pyproject.toml maps the repository's top-level ``payloads/`` and ``templates/`` there, so
site-packages gets no generic top-level names). Run from a checkout (PYTHONPATH or an
editable install) they are the repository's folders, bound here under the same names, so
every copy of gpujob imports and ships them the same way.
"""

__version__ = "0.1.0"

CHECKOUT_FOLDERS = ("payloads", "templates")  # mirrored by [tool.setuptools] package-dir


def _bind_checkout_folders() -> None:
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    for sub in CHECKOUT_FOLDERS:
        name = f"{__name__}.{sub}"
        init = os.path.join(os.path.dirname(here), sub, "__init__.py")
        if name in sys.modules or os.path.isdir(os.path.join(here, sub)) or not os.path.isfile(init):
            continue  # installed: a real subpackage (or already bound)
        from importlib.util import module_from_spec, spec_from_file_location

        spec = spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
        module = module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_bind_checkout_folders()

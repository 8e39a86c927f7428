"""The Compute Engine provider, one module per concern: ``launch`` (GcpProvider),
``selection`` (machine shape, names, request bodies), ``cleanup`` (teardown and label sweep)
and ``api`` (clients, errors, operations). Imports only flow towards ``api``/``selection``."""

"""The EC2 provider, one module per concern: ``launch`` (AwsProvider), ``selection`` (what to
launch, decided locally), ``cleanup`` (teardown and tag sweep), ``api`` (SDK plumbing) and
``common`` (error mapping, quotas, tags, user data). Imports only flow towards ``common``."""

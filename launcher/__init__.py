"""gpujob: estimate, launch, stream and tear down GPU training jobs.

Importing this package must stay cheap: no boto3, google-cloud or torch here.
"""

__version__ = "0.1.0"

"""The estimator's two entry points used by the commands (kept here so cli/runner import one name)."""

from launcher.estimate.api import for_machine, full_estimate

__all__ = ["for_machine", "full_estimate"]

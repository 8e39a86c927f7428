"""gpujob estimate: FLOPs, throughput model, overheads, billing and the local CPU baseline.

    from launcher.estimate import estimate, measure_baseline
    est = estimate(spec, baseline=measure_baseline(spec))   # or baseline=None: CPU predicted
    est.to_dict()                                            # the --json contract

Importing this package never imports torch; only counting an unlisted model does.
"""

from launcher.estimate.api import for_machine, full_estimate
from launcher.estimate.baseline import Baseline, measure_baseline
from launcher.estimate.billing import bill_usd, billable_seconds
from launcher.estimate.flops import ModelCost, model_cost
from launcher.estimate.overheads import Overheads, overheads_for
from launcher.estimate.table import COLUMNS, FREE_COLUMNS, Candidate, Estimate, FreeRow, estimate, human_duration
from launcher.estimate.throughput import Prediction, predict

__all__ = ["Baseline", "COLUMNS", "Candidate", "Estimate", "FREE_COLUMNS", "FreeRow", "ModelCost", "Overheads",
           "Prediction", "bill_usd", "billable_seconds", "estimate", "for_machine", "full_estimate", "human_duration", "measure_baseline",
           "model_cost", "overheads_for", "predict"]

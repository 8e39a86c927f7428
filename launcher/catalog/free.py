"""Free GPU notebooks the project's seed articles point beginners to.

Reference rows for the estimate ("this would fit in one free Colab session"), never launch
targets: neither service has an API for running a job, and neither guarantees a GPU.
Limits are the published or widely reported ones; both services change them without notice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FreeOption:
    name: str
    gpu: str  # normalised name, as in the catalog
    gpu_count: int
    max_session_hours: float
    weekly_hours: float | None  # None: not published
    source_url: str
    note: str


FREE_OPTIONS: tuple[FreeOption, ...] = (
    FreeOption(
        "Google Colab (free tier)", "T4", 1, 12.0, None,
        "https://research.google.com/colaboratory/faq.html",
        "notebooks run for at most 12 hours; idle sessions disconnect much sooner; GPUs are not "
        "guaranteed and usage limits fluctuate and are not published",
    ),
    FreeOption(
        "Kaggle Notebooks (GPU P100)", "P100", 1, 12.0, 30.0,
        "https://packtpub.com/en-sk/product/the-kaggle-book-9781801817479/chapter/working-and-learning-with-kaggle-notebooks-4/section/getting-the-most-out-of-notebooks-ch04lvl1sec17",
        "weekly GPU quota, usually about 30 h and floating week to week "
        "(https://www.kaggle.com/product-feedback/173129); sessions end after about 12 h",
    ),
    FreeOption(
        "Kaggle Notebooks (GPU T4 x2)", "T4", 2, 12.0, 30.0,
        "https://packtpub.com/en-sk/product/the-kaggle-book-9781801817479/chapter/working-and-learning-with-kaggle-notebooks-4/section/getting-the-most-out-of-notebooks-ch04lvl1sec17",
        "shares the P100 option's weekly GPU quota; sessions end after about 12 h",
    ),
)


def free_options(gpu: str | None = None) -> list[FreeOption]:
    want = gpu.casefold() if gpu else None
    return [f for f in FREE_OPTIONS if want is None or f.gpu.casefold() == want]

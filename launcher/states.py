"""The run lifecycle's states, written once as data that the runner, the store, ls, show, gc and tests share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class State:
    """One state a run record can be in.

    ``terminal``: the run is over (nothing will change it but `down`/`gc` cleaning leftovers).
    ``may_bill``: a run in this state may still hold cloud resources that bill.
    """

    name: str
    terminal: bool
    may_bill: bool
    meaning: str


STATES: dict[str, State] = {s.name: s for s in (
    State("created", False, False, "recorded; nothing created yet"),
    State("provisioning", False, True, "creating the machine(s)"),
    State("connecting", False, True, "waiting for SSH"),
    State("uploading", False, True, "shipping the payload and job config"),
    State("setup", False, True, "running the spec's setup"),
    State("running", False, True, "the job runs"),
    State("fetching", False, True, "bringing the results home"),
    State("fetch-failed", False, True, "the results are only on the machine, kept up: `gpujob fetch` or "
                                       "`gpujob down --discard`"),
    State("succeeded", True, False, "the job exited 0 and its results are home"),
    State("failed", True, False, "the job or a step failed; what could be fetched was"),
    State("interrupted", True, False, "stopped by a signal; the job was stopped and everything released"),
    State("cancelled", True, False, "stopped before launch or with `gpujob down`"),
    State("launch-failed", True, False, "no machine could be created"),
    State("spot-interrupted", True, False, "the cloud reclaimed the spot machine while the job ran"),
    # Over, but teardown could not confirm everything gone (e.g. the cloud rejected our
    # credentials): billing is not known to have stopped, the reason holds the exact gc command.
    State("leftovers", True, True, "over, but some resources could not be confirmed gone: run the gc command"),
    State("released", True, False, "its leftovers were deleted later (gpujob down / gc)"),
)}

TERMINAL_STATES: tuple[str, ...] = tuple(n for n, s in STATES.items() if s.terminal)
LIVE_STATES: tuple[str, ...] = tuple(n for n, s in STATES.items() if not s.terminal)


def is_terminal(state: str) -> bool:
    """True for a state no client will move on (unknown states count as live: never collect by mistake)."""
    s = STATES.get(state)
    return bool(s and s.terminal)

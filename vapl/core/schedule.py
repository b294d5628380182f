"""Algorithm 1's alternation as arithmetic: which phase a unit of training belongs to, and how
many units a budget of network updates takes. Plain Python, no torch or Lightning.

A *unit* is an epoch (``phase_unit="epoch"``, the default: the paper's "10 epochs, each comprising
5 iterations" of each phase) or a training batch (``phase_unit="batch"``). Training repeats
``f`` F units (f_m and f_o learn, g frozen) then ``g`` G units (g learns, the networks frozen).

The *budget* is the number of F units, i.e. of network updates, every method gets the same of:
the Baseline trains ``trainer.max_epochs`` epochs, VAPL trains its networks for ``max_epochs``
epochs too and its G units come on top. When the budget is not a multiple of ``f`` the last F
phase is cut short; every F phase, the last included, is followed by a full G phase.
"""

from __future__ import annotations

import math

PHASE_UNITS = ("epoch", "batch")


def f_units_before(unit: int, f: int, g: int) -> int:
    """How many F units come before ``unit`` (0-based) in the periodic schedule ``f`` F, ``g`` G."""
    cycle, position = divmod(unit, f + g)
    return cycle * f + min(position, f)


def phase_at(unit: int, f: int, g: int, budget: int | None = None) -> str:
    """``"F"`` or ``"G"``: the phase of ``unit``. Once ``budget`` F units have been done, every
    later unit is a G unit (``None``: no budget, the schedule is periodic)."""
    if g == 0:
        return "F"
    if unit % (f + g) >= f:
        return "G"
    if budget is not None and f_units_before(unit, f, g) >= budget:
        return "G"
    return "F"


def schedule_length(budget: int, f: int, g: int) -> int:
    """Units needed for ``budget`` F units, each F phase followed by a full G phase."""
    if budget <= 0:
        return 0
    if g == 0:
        return budget
    cycles, rest = divmod(budget - 1, f)
    return cycles * (f + g) + rest + 1 + g


def trainer_epochs(network_epochs: int, unit: str, f: int, g: int) -> int:
    """Trainer epochs for ``network_epochs`` epochs of network updates plus the G units.

    ``epoch`` units: exactly :func:`schedule_length`. ``batch`` units: ``ceil(E (f + g) / f)``,
    enough for ``E`` epochs of F batches whatever the batches per epoch (the F batches stop at
    the budget, the rest are G batches).
    """
    if unit not in PHASE_UNITS:
        raise ValueError(f"unknown phase unit {unit!r}; choose one of {PHASE_UNITS}")
    if unit == "epoch":
        return schedule_length(network_epochs, f, g)
    return math.ceil(network_epochs * (f + g) / f) if g else network_epochs

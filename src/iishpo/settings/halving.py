"""Successive halving and Hyperband over the resolution ladder, sized by a total budget.

The rungs are the ladder's resolutions. Successive halving (Jamieson & Talwalkar 2016)
evaluates ``n_0`` configurations at the smallest resolution and trains the best ``1/eta``
of each rung again at the next one; Hyperband (Li et al. 2018) runs brackets of it that
start at different rungs, most configurations first.

Both papers size a run by its resources; this study gives every strategy the same number of
*evaluations* (``study.budget``), so the sizes here are scaled to hit that total exactly:

* halving: ``n_i = floor(n_0 / eta**i)`` with ``n_0`` the largest whose rungs fit the
  budget; what is left (fewer than the number of rungs) is added to rung 0, so rung 0 may
  hold a few more than ``eta * n_1`` configurations (a deviation: the promoted are then
  slightly fewer than ``1/eta`` of it).
* Hyperband: bracket ``s`` (``s+1`` rungs, ``s = s_max .. 0``) starts with SMAC3's
  ``ceil(eta**s * (s_max+1) / (s+1))`` configurations and makes ``t_s`` evaluations; the
  budget is shared among brackets in proportion to ``t_s`` by D'Hondt's method (house
  monotone: a larger budget never shrinks a bracket, so the smallest budget that works is
  a threshold) and each bracket is successive halving with its share. A budget of
  ``sum(t_s)`` gives SMAC3's brackets exactly (``tests/test_halving.py``).

The planning layer: no torch here.
"""

from __future__ import annotations

import math

from iishpo.store import Trial


def _halving_total(n0: int, eta: int, n_rungs: int) -> int:
    return sum(n0 // eta**i for i in range(n_rungs))


def halving_rungs(budget: int, eta: int, n_rungs: int) -> list[int]:
    """Evaluations per rung of one successive-halving bracket of ``budget`` evaluations;
    the last rung may be 0 when the budget is below :func:`smallest_halving_budget`."""
    n0 = 0
    while _halving_total(n0 + 1, eta, n_rungs) <= budget:
        n0 += 1
    counts = [n0 // eta**i for i in range(n_rungs)]
    counts[0] += budget - sum(counts)
    return counts


def smallest_halving_budget(eta: int, n_rungs: int) -> int:
    """The fewest evaluations that leave one configuration in the last rung."""
    return sum(eta**i for i in range(n_rungs))


def smac_bracket_sizes(eta: int, n_rungs: int) -> list[int]:
    """Evaluations of each Hyperband bracket as SMAC3 sizes them (``s = s_max .. 0``)."""
    s_max = n_rungs - 1
    sizes = []
    for s in range(s_max, -1, -1):
        n_initial = math.ceil(eta**s * (s_max + 1) / (s + 1))
        sizes.append(_halving_total(n_initial, eta, s + 1))
    return sizes


def _shares(budget: int, weights: list[int]) -> list[int]:
    """``budget`` shared in proportion to ``weights`` by D'Hondt's method (ties: the
    earlier, larger bracket)."""
    shares = [0] * len(weights)
    for _ in range(budget):
        best = max(range(len(weights)), key=lambda b: (weights[b] / (shares[b] + 1), -b))
        shares[best] += 1
    return shares


def hyperband_brackets(budget: int, eta: int, n_rungs: int) -> list[list[int]]:
    """Evaluations per rung of each bracket, the bracket starting at rung 0 first; bracket
    ``k`` has ``n_rungs - k`` rungs, the last at the largest resolution."""
    shares = _shares(budget, smac_bracket_sizes(eta, n_rungs))
    return [halving_rungs(share, eta, n_rungs - k) for k, share in enumerate(shares)]


def smallest_hyperband_budget(eta: int, n_rungs: int) -> int:
    """The fewest evaluations that leave one configuration in every bracket's last rung."""
    budget = sum(smallest_halving_budget(eta, n) for n in range(1, n_rungs + 1))
    while not all(bracket[-1] >= 1 for bracket in hyperband_brackets(budget, eta, n_rungs)):
        budget += 1
    return budget


def promote(trials: list[Trial], n: int) -> list[Trial]:
    """The ``n`` best trials of a rung, trained again at the next rung: lowest loss (a
    failed trial's is the worst), then earliest, so that a rung with failures still
    promotes as many as the next rung's budget."""
    if n > len(trials):
        raise ValueError(f"cannot promote {n} of {len(trials)} trials")
    return sorted(trials, key=lambda t: (t.loss, t.number))[:n]

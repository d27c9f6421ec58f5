"""Mean rank over wall time: hand-made runs whose ranks are worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iishpo.results.ranking import Curve, mean_ranks, rank_figure

inf = math.inf
TIMES = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0])

#: two seeds of standard, iis and halving (seconds since the run began, best error so far)
HAND_CURVES = [
    Curve("tpe", "halving", 0, ((5.0, 0.4),)),
    Curve("tpe", "iis", 1, ((10.0, 0.2),)),
    Curve("tpe", "standard", 0, ((10.0, 0.5), (20.0, 0.3))),
    Curve("tpe", "iis", 0, ((15.0, inf), (25.0, 0.2))),  # its first result trial failed
    Curve("tpe", "standard", 1, ((10.0, 0.2),)),
    Curve("tpe", "halving", 1, ((30.0, 0.1),)),
]


def test_a_curve_is_its_best_so_far_and_inf_before_a_result() -> None:
    curve = Curve("tpe", "iis", 0, ((15.0, inf), (25.0, 0.2), (27.0, 0.1)))
    assert curve.at(np.array([0.0, 15.0, 20.0, 25.0, 26.0, 27.0, 100.0])).tolist() == [
        inf, inf, inf, 0.2, 0.2, 0.1, 0.1,  # a finished run keeps its result
    ]
    assert Curve("tpe", "iis", 0, ()).at(np.array([0.0, 1.0])).tolist() == [inf, inf]


def test_mean_ranks_of_hand_made_runs() -> None:
    """Ranks (standard, iis, halving) by hand. Seed 0: none has a result at 0 s (2, 2, 2);
    at 5 s only halving (2.5, 2.5, 1); at 10 and 15 s standard 0.5, halving 0.4, iis none
    yet (its 15 s trial failed) (2, 3, 1); at 20 s standard 0.3 (1, 3, 2); from 25 s iis 0.2
    (2, 1, 3). Seed 1: (2, 2, 2) until standard and iis tie at 0.2 from 10 s (1.5, 1.5, 3);
    halving's 0.1 at 30 s (2.5, 2.5, 1)."""
    ranks = mean_ranks(HAND_CURVES, TIMES)
    assert list(ranks) == ["standard", "iis", "halving"]
    seed0 = [(2, 2, 2), (2.5, 2.5, 1), (2, 3, 1), (2, 3, 1), (1, 3, 2), (2, 1, 3), (2, 1, 3)]
    seed1 = [(2, 2, 2), (2, 2, 2), (1.5, 1.5, 3), (1.5, 1.5, 3), (1.5, 1.5, 3), (1.5, 1.5, 3), (2.5, 2.5, 1)]
    for k, strategy in enumerate(ranks):
        expected = [(a[k] + b[k]) / 2 for a, b in zip(seed0, seed1, strict=True)]
        assert ranks[strategy].tolist() == expected, strategy
    assert (ranks["standard"] + ranks["iis"] + ranks["halving"]).tolist() == [6.0] * len(TIMES)


def test_a_strategy_is_averaged_over_the_seeds_that_ran_it() -> None:
    curves = [Curve("ga", "standard", 0, ((1.0, 0.5),)), Curve("ga", "iis", 0, ((1.0, 0.4),)),
              Curve("ga", "standard", 1, ((1.0, 0.3),))]
    ranks = mean_ranks(curves, np.array([2.0]))
    assert {s: r.tolist() for s, r in ranks.items()} == {"standard": [1.5], "iis": [1.0]}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"one optimizer, got \['ga', 'tpe'\]"):
        mean_ranks([*HAND_CURVES, Curve("ga", "iis", 0, ())], TIMES)
    with pytest.raises(ValueError, match="seed 0 of tpe has more than one run of a strategy"):
        mean_ranks([*HAND_CURVES, Curve("tpe", "iis", 0, ())], TIMES)
    with pytest.raises(ValueError, match="at least one run"):
        rank_figure([], "none", Path("unused"))


def test_rank_figure_one_panel_per_optimizer(tmp_path: Path) -> None:
    curves = [*HAND_CURVES, Curve("random", "standard", 0, ((60.0, 0.3),)), Curve("random", "iis", 0, ((30.0, 0.2),))]
    png, svg = rank_figure(curves, "tiny", tmp_path / "ranks")
    assert (png.name, svg.name) == ("ranks.png", "ranks.svg")
    with Image.open(png) as image:
        assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
        low, high = image.convert("L").getextrema()
        assert high - low > 100
    assert svg.read_text().count("<svg") == 1 and "tpe" in svg.read_text() and "random" in svg.read_text()

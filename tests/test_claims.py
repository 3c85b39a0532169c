"""Claims, paired gains and data utility from a synthetic summary (docs/method.md §8)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from structure_align.claims import (
    claims_markdown,
    claims_table,
    counterpart,
    gains_table,
    headline_markdown,
    utility_markdown,
    utility_table,
)
from structure_align.runs import Variant
from structure_align.stats import seeds_needed

RS = {"lambda": 10.0, "levels": 1, "tau": 0.05, "weighting": "none", "distance": "cosine"}
VARIANTS = [{"label": v.label, **v.values()} for v in (
    Variant.make("linear", "last", None), Variant.make("linear", "similar", None),
    Variant.make("linear", "similar", RS), Variant.make("csa", "similar", None), Variant.make("csa", "similar", RS))]
SEEDS = (1, 2, 3, 4, 5)


def _summary() -> pd.DataFrame:
    """Linear + Similar + R_S gains 1..5 points at N=50 (by seed) and exactly 1 at N=500; CSA + R_S loses 2."""
    rows = []
    for n in (50, 500):
        for s in SEEDS:
            base = 10.0 * s + (0 if n == 50 else 20)  # large seed-to-seed spread, cancelled by pairing
            values = {"Linear + Last": base - 1, "Linear + Similar": base,
                      "Linear + Similar + R_S": base + (s if n == 50 else 1.0),
                      "CSA + Similar": base, "CSA + Similar + R_S": base - 2.0}
            for label, v in values.items():
                rows.append({"encoders": "v + t", "variant": label, "fraction": n / 500, "n_train_pairs": n,
                             "seed": s, "zeroshot_top1": v})
    return pd.DataFrame(rows)


def test_counterparts() -> None:
    labels = {v["label"]: v for v in VARIANTS}
    assert counterpart(labels["Linear + Similar + R_S"], VARIANTS)["label"] == "Linear + Similar"
    assert counterpart(labels["Linear + Similar"], VARIANTS)["label"] == "Linear + Last"
    assert counterpart(labels["Linear + Last"], VARIANTS) is None
    assert counterpart(labels["CSA + Similar"], VARIANTS) is None  # no CSA + Last row here


def test_gains_and_claims() -> None:
    summary = _summary()
    gains = gains_table(summary, VARIANTS, ["zeroshot_top1"])
    g = gains[(gains.variant == "Linear + Similar + R_S") & (gains.n_train_pairs == 50)].iloc[0]
    half = 2.7764451052 * math.sqrt(2.5) / math.sqrt(5)
    assert (g["mean"], g.lo, g.hi, g.n) == pytest.approx((3.0, 3.0 - half, 3.0 + half, 5))
    claims = claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy data").set_index(["id", "claim"])
    c1 = claims.loc[("C1", "R_S improves over no R_S at small N")]
    assert c1.verdict == "supported" and c1.effect == pytest.approx(3.0) and c1.n_train_pairs == 50
    c2 = claims.loc[("C2", "Similar >= Last")]
    assert c2.verdict == "supported" and c2.effect == pytest.approx(1.0) and c2.n_train_pairs == 500
    c3 = claims.loc[("C3", "the R_S gain shrinks as N grows")]
    assert c3.effect == pytest.approx(2.0) and c3.verdict == "supported"  # gains 1..5 at N=50 vs 1 at N=500
    c4 = claims.loc[("C4", "R_S helps every head (CSA)")]
    assert c4.verdict == "not supported" and c4.effect == pytest.approx(-2.0)
    assert "**not supported**" in claims_markdown(claims.reset_index()) and "v + t; toy data" in c4.condition


def test_utility_table() -> None:
    table = utility_table(_summary(), VARIANTS, ["zeroshot_top1"]).set_index("variant")
    # baseline Linear + Similar at N=500: mean 50; R_S curve: 33 at N=50, 51 at N=500 -> interpolated on log N
    row = table.loc["Linear + Similar + R_S"]
    t = (50.0 - 33.0) / (51.0 - 33.0)
    needed = math.exp(math.log(50) + t * (math.log(500) - math.log(50)))
    assert row.n_needed == pytest.approx(needed) and row.factor == pytest.approx(500 / needed)
    assert table.loc["CSA + Similar + R_S"].note == "not reached"


# -- exact Markdown of the README's tables (issue 25 item 5) ---------------------------------------------------------
# One expected string per table, from _summary(): every number can be checked by hand (module docstring of _summary:
# seed means 10 s + 20 [N=500] ± the variant offsets; std of 10 x (1..5) = 15.8; t(0.975, 4) = 2.776; the N needed by
# R_S: exp(ln 50 + 17/18 ln 10) = 440; the C1 paired SD 1.58 gives the MDE (2.776 + 0.941) x 1.58 / sqrt 5 = 2.63).
# A deliberate format change (a new column) updates these strings.

HEADLINE = """\
| Encoders | Method | N | seeds | zero-shot top-1 (%) | Δ [95 % CI] | compared with |
|---|---|---:|---:|---:|---:|---|
| v + t | Linear + Last | 50 | 5 | 29.0 ± 15.8 | — | — |
| v + t | Linear + Similar | 50 | 5 | 30.0 ± 15.8 | +1.0 [+1.0, +1.0] | Linear + Last |
| v + t | Linear + Similar + R_S | 50 | 5 | 33.0 ± 17.4 | +3.0 [+1.0, +5.0] | Linear + Similar |
| v + t | CSA + Similar | 50 | 5 | 30.0 ± 15.8 | — | — |
| v + t | CSA + Similar + R_S | 50 | 5 | 28.0 ± 15.8 | -2.0 [-2.0, -2.0] | CSA + Similar |
| v + t | Linear + Last | 500 | 5 | 49.0 ± 15.8 | — | — |
| v + t | Linear + Similar | 500 | 5 | 50.0 ± 15.8 | +1.0 [+1.0, +1.0] | Linear + Last |
| v + t | Linear + Similar + R_S | 500 | 5 | 51.0 ± 15.8 | +1.0 [+1.0, +1.0] | Linear + Similar |
| v + t | CSA + Similar | 500 | 5 | 50.0 ± 15.8 | — | — |
| v + t | CSA + Similar + R_S | 500 | 5 | 48.0 ± 15.8 | -2.0 [-2.0, -2.0] | CSA + Similar |
"""

CLAIMS = """\
| id | claim | comparison | metric | N | seeds | effect [95 % CI] (points) | p | MDE (points) | paper effect | seeds for 1 pt | verdict | condition |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| C1 | R_S improves over no R_S at small N | Linear + Similar + R_S - Linear + Similar | zeroshot_top1 | 50 | 5 | +3.00 [+1.04, +4.96] | 0.013 | 2.63 | n/a | 22 | **supported** | v + t; toy data |
| C2 | Similar >= Last | Linear + Similar - Linear + Last | zeroshot_top1 | 500 | 5 | +1.00 [+1.00, +1.00] | 0.000 | 0.00 | n/a | 2 | **supported** | v + t; toy data |
| C3 | the R_S gain shrinks as N grows | gain at N=50 - gain at N=500 (Linear + Similar + R_S - Linear + Similar) | zeroshot_top1 | 50 vs 500 | 5 | +2.00 [+0.04, +3.96] | 0.047 | 2.63 | n/a | 22 | **supported** | v + t; toy data |
| C4 | R_S helps every head (Linear) | Linear + Similar + R_S - Linear + Similar | zeroshot_top1 | 50 | 5 | +3.00 [+1.04, +4.96] | 0.013 | 2.63 | n/a | 22 | **supported** | v + t; toy data |
| C4 | R_S helps every head (CSA) | CSA + Similar + R_S - CSA + Similar | zeroshot_top1 | 50 | 5 | -2.00 [-2.00, -2.00] | 0.000 | 0.00 | n/a | 2 | **not supported** | v + t; toy data |

Verdicts: supported = the 95 % CI of the paired per-seed difference lies above 0; not supported = it lies at or below 0; inconclusive = it contains 0; underpowered = it contains 0 and the MDE is above the effect the paper reports for this comparison (or, where the paper reports none, above the 1-point target effect), so the seeds could not have seen that effect. MDE = minimal detectable effect of a paired t-test at 80 % power and alpha = 0.05 for the observed paired SD and seed count; seeds for 1 pt = seeds that detect a 1-point effect at that SD. C3 compares the gain at the smallest N with the gain at the largest N (positive = the gain shrinks).
"""

UTILITY = """\
| Encoders | Variant | vs | metric | baseline N | baseline score | N needed | factor | note |
|---|---|---|---|---|---|---|---|---|
| v + t | Linear + Similar + R_S | Linear + Similar | zeroshot_top1 | 500 | 50.0 | 440 | 1.14× | interpolated on log N |
| v + t | CSA + Similar + R_S | CSA + Similar | zeroshot_top1 | 500 | 50.0 | — | — | not reached |

factor = baseline N / N needed: how many times fewer pairs the R_S variant needs to reach the baseline's mean score at the baseline's largest N (seed means, linear interpolation on log N).
"""


def test_headline_claims_and_utility_markdown_are_exact() -> None:
    summary = _summary()
    gains = gains_table(summary, VARIANTS, ["zeroshot_top1"])
    assert headline_markdown(summary, gains, VARIANTS, ["zeroshot_top1"]) == HEADLINE
    assert claims_markdown(claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy data")) == CLAIMS
    assert utility_markdown(utility_table(summary, VARIANTS, ["zeroshot_top1"])) == UTILITY


def test_power_columns_and_underpowered() -> None:
    # paper: Linear + Similar + R_S gains 2 and 4 top-1 points over Linear + Similar (mean 3); Similar - Last = 0.5
    paper = pd.DataFrame([
        {"method": "Linear + Last", "head": "linear", "layers": "last", "structure": False, "a top-1": 10.0,
         "b top-1": 20.0, "f I2T R@1": 5.0},
        {"method": "Linear + Similar", "head": "linear", "layers": "similar", "structure": False, "a top-1": 10.0,
         "b top-1": 21.0, "f I2T R@1": 6.0},
        {"method": "Linear + Similar + R_S", "head": "linear", "layers": "similar", "structure": True,
         "a top-1": 12.0, "b top-1": 25.0, "f I2T R@1": 9.0}])
    summary = _summary()
    # C2 made noisy: Similar - Last per seed = -1, +3, -1, +3, -1 (mean 0.6, CI straddles 0, MDE ~ 4 points)
    wobble = {1: -1.0, 2: 3.0, 3: -1.0, 4: 3.0, 5: -1.0}
    sel = (summary.variant == "Linear + Last") & (summary.n_train_pairs == 500)
    summary.loc[sel, "zeroshot_top1"] = [v + 1 - wobble[s] for v, s in zip(summary.loc[sel, "zeroshot_top1"],
                                                                            summary.loc[sel, "seed"])]
    claims = claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy", target_effect=1.0, paper=paper)
    c = claims.set_index("id")
    assert c.loc["C1", "paper_effect"] == pytest.approx(3.0) and c.loc["C2", "paper_effect"] == pytest.approx(0.5)
    assert math.isnan(c.loc["C3", "paper_effect"])  # the paper reports no gain-vs-N number
    sd = math.sqrt(4.8)  # sample SD of -1, 3, -1, 3, -1
    assert c.loc["C2", "mde"] == pytest.approx((2.7764 + 0.9410) * sd / math.sqrt(5), abs=1e-3)
    assert c.loc["C2", "verdict"] == "underpowered"  # MDE ~ 3.7 > the paper's 0.5
    assert c.loc["C2", "seeds_needed"] == seeds_needed(sd, 1.0)
    assert c.loc["C1", "verdict"] == "supported"
    # without the paper's table the 1-point target is the reference: still underpowered; a 5-point target is not
    no_paper = claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy").set_index("id")
    assert no_paper.loc["C2", "verdict"] == "underpowered" and math.isnan(no_paper.loc["C2", "paper_effect"])
    five = claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy", target_effect=5.0).set_index("id")
    assert five.loc["C2", "verdict"] == "inconclusive"
    md = claims_markdown(claims)
    assert "| MDE (points) | paper effect | seeds for 1 pt | verdict |" in md and "**underpowered**" in md
    gains = gains_table(summary, VARIANTS, ["zeroshot_top1"], target_effect=1.0)
    g = gains[(gains.variant == "Linear + Similar") & (gains.n_train_pairs == 500)].iloc[0]
    assert g.mde == pytest.approx(c.loc["C2", "mde"]) and g.seeds_needed == c.loc["C2", "seeds_needed"]


def test_comparisons_pair_on_common_seeds() -> None:
    # seeds_by_size: seeds 6 and 7 only at N=50 (R_S gains 6 and 7 there); C3 pairs the N=50 gain with the N=500
    # gain on the five seeds both sizes have
    summary = _summary()
    extra = []
    for s in (6, 7):
        for label, v in {"Linear + Last": 9.0, "Linear + Similar": 10.0, "Linear + Similar + R_S": 10.0 + s,
                         "CSA + Similar": 10.0, "CSA + Similar + R_S": 8.0}.items():
            extra.append({"encoders": "v + t", "variant": label, "fraction": 0.1, "n_train_pairs": 50, "seed": s,
                          "zeroshot_top1": v})
    summary = pd.concat([summary, pd.DataFrame(extra)], ignore_index=True)
    c = claims_table(summary, VARIANTS, ["zeroshot_top1"], "toy").set_index("id")
    assert c.loc["C1", "seeds"] == 7 and c.loc["C1", "effect"] == pytest.approx(4.0)  # gains 1..7
    assert c.loc["C3", "seeds"] == 5 and c.loc["C3", "effect"] == pytest.approx(2.0)  # seeds 1..5 only
    assert c.loc["C2", "seeds"] == 5  # at the largest N

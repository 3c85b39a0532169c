#!/usr/bin/env python
"""Mutation check (issue 25, `make mutation`): small deliberate mistakes the unit tests must catch.

Each mutation replaces one exact piece of source text in a temporary copy of the repository's ``src/`` (the tests,
docs and configs are copied alongside, unchanged) and runs the unit tests chosen for it with ``-x``; a mutation is
*caught* when those tests fail. The original text must occur exactly once, so a refactor that moves or rewrites a
target stops the check with an error naming the mutation instead of letting it pass silently. Before the first
mutation the unmutated copy must pass every selected test (else "caught" would mean nothing).

Why a hand list rather than mutmut: see docs/workflow.md "Mutation check". Usage::

    python tests/mutation_check.py            # all mutations; exit 1 if any survives or errors
    python tests/mutation_check.py --list     # the list, nothing run
    python tests/mutation_check.py --only M01 M03
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("src", "tests", "docs", "workflow", "pyproject.toml", "params.yaml", "README.md")


@dataclass(frozen=True)
class Mutation:
    id: str
    area: str
    what: str
    file: str  # under src/structure_align/
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids / files / -k expressions, run with -x


MUTATIONS: tuple[Mutation, ...] = (
    # -- evaluation --------------------------------------------------------------------------------------------------
    Mutation("M01", "evaluation", "every caption points at the image two places on (text_image_index + 2)",
             "evaluate.py", "es.text_rows, es.text_image_index = keep, position[groups[keep]]",
             "es.text_rows, es.text_image_index = keep, (position[groups[keep]] + 2) % len(rows)",
             ("tests/test_wiring.py", "-k", "independent_recomputation")),
    Mutation("M02", "evaluation", "a training set is evaluated on its train split instead of its test split",
             "evaluate.py", 'np.flatnonzero(df["split"].to_numpy() == "test") if test_split',
             'np.flatnonzero(df["split"].to_numpy() == "train") if test_split',
             ("tests/test_wiring.py", "-k", "independent_recomputation")),
    Mutation("M03", "evaluation", "CSA zero-shot ignores evaluation.csa_raw_prototypes",
             "steps.py", 'raw_prototypes=raw and spec.variant.head == "csa"', "raw_prototypes=False",
             ("tests/test_wiring.py", "-k", "raw_prototypes")),
    Mutation("M04", "evaluation", "zero-shot top-1 scores the lowest-ranked of the top-k classes",
             "evaluate.py", "correct1[sl] = top[:, 0] == y[sl]", "correct1[sl] = top[:, -1] == y[sl]",
             ("tests/test_evaluate.py",)),
    Mutation("M05", "evaluation", "I2T Recall@k counts k + 1 ranks",
             "evaluate.py", 'out[f"i2t_r{k}"] = 100.0 * float(((i2t_rank < k)',
             'out[f"i2t_r{k}"] = 100.0 * float(((i2t_rank <= k)', ("tests/test_evaluate.py",)),
    # -- layer choice ------------------------------------------------------------------------------------------------
    Mutation("M06", "layer choice", "subsample_choice returns the Last pair instead of the Similar one",
             "steps.py", 'i, j = choose_layers(scores, "similar")\n    return int(i), int(j), float(scores[i, j])',
             'i, j = choose_layers(scores, "last")\n    return int(i), int(j), float(scores[i, j])',
             ("tests/test_wiring.py", "-k", "subsample_choice")),
    Mutation("M07", "layer choice", "the pool choice is scored on the validation rows",
             "steps.py", "validation_split(pool.n, val_fraction, val_seed)[0])",
             "validation_split(pool.n, val_fraction, val_seed)[1])", ("tests/test_wiring.py", "-k", "pool_choice")),
    Mutation("M08", "layer choice", "a sample counts as its own nearest neighbour",
             "similarity.py", "sim[rows, rows + start] = -math.inf", "sim[rows, rows + start] = math.inf",
             ("tests/test_similarity.py",)),
    Mutation("M09", "layer choice", "Similar takes the argmin of the scores",
             "similarity.py", "np.unravel_index(int(np.argmax(s)), s.shape)",
             "np.unravel_index(int(np.argmin(s)), s.shape)", ("tests/test_similarity.py",)),
    # -- R_S and its variants ----------------------------------------------------------------------------------------
    Mutation("M10", "R_S", "the inverse level weighting is 1/l^2",
             "regularizer.py", 'weight = 1.0 if weighting == "none" else 1.0 / level',
             'weight = 1.0 if weighting == "none" else 1.0 / (level * level)', ("tests/test_regularizer.py",)),
    Mutation("M11", "R_S variants", "rbf uses the distance instead of its square",
             "regularizer.py", "return torch.exp(-gamma * d2)", "return torch.exp(-gamma * d2.sqrt())",
             ("tests/test_regularizer.py",)),
    Mutation("M12", "R_S variants", "spearman uses argsort positions instead of ranks",
             "regularizer.py", "ranks = z.argsort(dim=-1).argsort(dim=-1).to(z.dtype)",
             "ranks = z.argsort(dim=-1).to(z.dtype)", ("tests/test_regularizer.py",)),
    Mutation("M13", "R_S variants", "standard centring divides by the biased std",
             "regularizer.py", "centred / z.std(dim=0, keepdim=True).clamp_min(eps)",
             "centred / z.std(dim=0, keepdim=True, correction=0).clamp_min(eps)", ("tests/test_regularizer.py",)),
    Mutation("M14", "R_S variants", "center_first is ignored",
             "regularizer.py", "return safe_normalize(center(z, centering))",
             "return center(safe_normalize(z), centering)", ("tests/test_regularizer.py",)),
    Mutation("M15", "R_S", "the text side's R_S is replaced by the image side's in the training loss",
             "losses.py", "rs = 0.5 * (rs_img + rs_txt)", "rs = 0.5 * (rs_img + rs_img)", ("tests/test_losses.py",)),
    # -- heads -------------------------------------------------------------------------------------------------------
    Mutation("M16", "heads", "the residual MLP subtracts its linear skip",
             "heads.py", "out = out + self.skip(x)", "out = out - self.skip(x)", ("tests/test_heads.py",)),
    Mutation("M17", "heads", "training keeps the last epoch's weights instead of the best epoch's",
             "train.py", "    aligner.load_state_dict(best_state)\n", "", ("tests/test_train.py",)),
    # -- CSA ---------------------------------------------------------------------------------------------------------
    Mutation("M18", "CSA", "refine_loss without its R_S term",
             "csa.py", "return rs_lambda * rs - lambda_cca", "return 0.0 * rs - lambda_cca", ("tests/test_csa.py",)),
    Mutation("M19", "CSA", "refine_loss rewards anti-correlation (CCA term sign flipped)",
             "csa.py", "rs_lambda * rs - lambda_cca * (zx * zy)", "rs_lambda * rs + lambda_cca * (zx * zy)",
             ("tests/test_csa.py",)),
    Mutation("M20", "CSA", "the correlation weighting uses rho instead of sqrt(rho)",
             "csa.py", 'self.corr.clamp_min(0).sqrt() if self.weighting == "correlation"',
             'self.corr.clamp_min(0) if self.weighting == "correlation"', ("tests/test_csa.py",)),
    # -- statistics --------------------------------------------------------------------------------------------------
    Mutation("M21", "statistics", "the t quantile uses n degrees of freedom instead of n - 1",
             "stats.py", "_st.t.ppf(0.5 + confidence / 2.0, df=n - 1)", "_st.t.ppf(0.5 + confidence / 2.0, df=n)",
             ("tests/test_stats.py", "tests/test_claims.py")),
    Mutation("M22", "statistics", "the p-value is one-sided",
             "stats.py", "p = float(2.0 * _st.t.sf(", "p = float(1.0 * _st.t.sf(",
             ("tests/test_stats.py", "tests/test_claims.py")),
    Mutation("M23", "statistics", "data utility interpolates from the wrong end of the segment",
             "stats.py", "needed = math.exp(lx0 + t * (lx1 - lx0))", "needed = math.exp(lx1 - t * (lx1 - lx0))",
             ("tests/test_stats.py", "tests/test_claims.py")),
    # -- claims ------------------------------------------------------------------------------------------------------
    Mutation("M24", "claims", "C3 subtracts the small-N gain from the large-N gain",
             "claims.py", "d = paired_difference(g_large.loc[seeds].to_numpy(), g_small.loc[seeds].to_numpy())",
             "d = paired_difference(g_small.loc[seeds].to_numpy(), g_large.loc[seeds].to_numpy())",
             ("tests/test_claims.py",)),
    Mutation("M25", "claims", "Similar is compared with itself instead of with Last",
             "claims.py", 'want = (variant["head"], "last")', 'want = (variant["head"], "similar")',
             ("tests/test_claims.py",)),
    # -- aggregation -------------------------------------------------------------------------------------------------
    Mutation("M26", "aggregation", "the headline std divides by n instead of n - 1",
             "claims.py", "std = float(sel[m].std(ddof=1))", "std = float(sel[m].std(ddof=0))",
             ("tests/test_claims.py",)),
    Mutation("M27", "aggregation", "retrieval R@k summary averages I2T only",
             "tables.py", 'scaling.metric.isin([f"i2t_{k}", f"t2i_{k}"])', 'scaling.metric.isin([f"i2t_{k}"])',
             ("tests/test_report.py", "tests/test_steps.py")),
    Mutation("M28", "aggregation", "the main table's std divides by n instead of n - 1",
             "tables.py", "return float(values.std(ddof=1)) if len(values) > 1 else 0.0",
             "return float(values.std(ddof=0)) if len(values) > 1 else 0.0",
             ("tests/test_report.py", "tests/test_steps.py")),
)

# the three mistakes issue 25 found surviving the whole unit suite
ISSUE_MUTATIONS = ("M01", "M06", "M18")


def _copy_repo(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        elif src.is_file():
            shutil.copy2(src, dest / name)


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src")  # ahead of the editable install of the real checkout
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated and a restored file may share size and mtime second
    return env


def _pytest(copy: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow and not workflow",
           *args]
    return subprocess.run(cmd, cwd=copy, env=_env(copy), capture_output=True, text=True, check=False)


def _check_targets(mutations: tuple[Mutation, ...]) -> list[str]:
    """Every original text occurs exactly once in its (real) file; returns the problems."""
    problems = []
    for m in mutations:
        path = ROOT / "src/structure_align" / m.file
        n = path.read_text().count(m.old) if path.is_file() else 0
        if n != 1:
            problems.append(f"{m.id}: {m.file} holds the target text {n} times (expected once): {m.old!r}; the code "
                            "changed, update the mutation in tests/mutation_check.py")
    return problems


def run(mutations: tuple[Mutation, ...]) -> int:
    problems = _check_targets(mutations)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        where = subprocess.run([sys.executable, "-c", "import structure_align; print(structure_align.__file__)"],
                               cwd=copy, env=_env(copy), capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(copy)):
            print(f"the copy's package is not the one imported ({where}); cannot run the check", file=sys.stderr)
            return 2
        selected = tuple(dict.fromkeys(a for m in mutations for a in m.tests if a.startswith("tests/")))
        base = _pytest(copy, selected)
        if base.returncode != 0:
            print(f"the unmutated copy fails its tests; fix them first:\n{base.stdout[-4000:]}", file=sys.stderr)
            return 2
        print(f"baseline: {len(selected)} test files pass unmutated ({time.perf_counter() - start:.0f} s)")
        survived, errors = [], []
        for m in mutations:
            path = copy / "src/structure_align" / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            t0 = time.perf_counter()
            try:
                proc = _pytest(copy, m.tests)
            finally:
                path.write_text(original)
            # pytest exit 1 = tests failed (caught); 0 = passed (survived); anything else = could not run
            status = {0: "SURVIVED", 1: "caught"}.get(proc.returncode, f"ERROR (pytest exit {proc.returncode})")
            print(f"{m.id}  {status:<9} {time.perf_counter() - t0:5.1f} s  [{m.area}] {m.what}", flush=True)
            if proc.returncode == 0:
                survived.append(m.id)
            elif proc.returncode != 1:
                errors.append(m.id)
                print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
    caught = len(mutations) - len(survived) - len(errors)
    print(f"{caught} of {len(mutations)} mutations caught, {len(survived)} survived {survived or ''}, "
          f"{len(errors)} errors {errors or ''}; {time.perf_counter() - start:.0f} s")
    return 0 if not survived and not errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutation ids")
    args = parser.parse_args(argv)
    chosen = MUTATIONS if not args.only else tuple(m for m in MUTATIONS if m.id in set(args.only))
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown mutation id(s) among {args.only}")
    if args.list:
        for m in chosen:
            print(f"{m.id}  [{m.area}] {m.what}  ({m.file}; {' '.join(m.tests)})")
        return 0
    return run(chosen)


if __name__ == "__main__":
    sys.exit(main())

"""Reference rows and the paper-profile table (docs/paper-profile.md "CLIP reference", "Paper table").

* The **CLIP reference** is a model's own joint space, evaluated by the same evaluator as every trained run
  (:func:`structure_align.evaluate.evaluate_set`) and never trained: its encoders' one layer is the projected
  embedding (``clip-image:`` / ``clip-text:``), and :class:`IdentityAligner` only L2-normalises it. Params
  ``references`` lists such encoder pairs; each writes ``<results>/references/<vision>__<text>/metrics.json`` in
  the format of a run's metrics.
* The **paper table** puts the main table's rows (seed means at the largest training size, ``tables/main.csv``) and
  the reference rows beside the paper's published numbers (a CSV such as ``workflow/configs/paper-reference.csv``)
  with the difference ours - paper, matching rows by (head, layers, R_S on/off) and columns by their titles.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .io import read_json, write_json, write_text_atomic

log = logging.getLogger(__name__)

REFERENCE_HEAD = "reference"
KEY_COLUMNS = ("head", "layers", "structure")


class IdentityAligner(nn.Module):
    """The aligner of a model that already has a joint space: L2 normalisation only, nothing trained."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``x / ||x||`` in float32."""
        return F.normalize(x.float(), dim=-1)

    def encode_text(self, y: torch.Tensor) -> torch.Tensor:
        """``y / ||y||`` in float32."""
        return F.normalize(y.float(), dim=-1)


def evaluate_reference(datasets: Sequence[Mapping[str, Any]], *, evaluation: Mapping[str, Any], out: str | Path,
                       label: str, vision: str, text: str, device: str = "auto") -> dict[str, Any]:
    """Evaluate the joint space of (``vision``, ``text``) at their last layer on every dataset; write ``out``.

    ``datasets`` are the evaluate step's records (``name``, ``vision``, ``text``, ``manifest``, ``test_split``).
    """
    from .evaluate import evaluate_set, load_eval_set
    from .utils import resolve_device

    dev = resolve_device(device)
    aligner = IdentityAligner()
    results = {}
    for d in datasets:
        es = load_eval_set(d["vision"], d["text"], d["manifest"], test_split=bool(d["test_split"]))
        results[d["name"]] = evaluate_set(aligner, es, es.vision.n_layers - 1, es.text.n_layers - 1,
                                          duplicate_gallery=bool(evaluation["duplicate_gallery"]),
                                          batch_size=int(evaluation["batch_size"]), device=dev)
        log.info("reference %s %s: %s", label, d["name"], results[d["name"]]["metrics"])
    record = {"run": {"head": REFERENCE_HEAD, "label": label, "vision": vision, "text": text, "n_train": 0,
                      "trained": False}, "datasets": results}
    write_json(out, record)
    return record


def reference_metrics_paths(config: Mapping[str, Any], results: str) -> list[str]:
    """``<results>/references/<pair>/metrics.json`` of every params ``references`` entry."""
    from .runs import pair_name

    return [f"{results}/references/{pair_name(r['vision'], r['text'])}/metrics.json"
            for r in config.get("references") or []]


def reference_entry(config: Mapping[str, Any], vision_slug: str, text_slug: str) -> Mapping[str, Any]:
    """The params ``references`` entry whose pair directory is ``<vision_slug>__<text_slug>``."""
    from .runs import pair_name

    for r in config.get("references") or []:
        if pair_name(r["vision"], r["text"]) == f"{vision_slug}__{text_slug}":
            return r
    raise KeyError(f"no params 'references' entry for the pair {vision_slug}__{text_slug}")


def paper_outputs(config: Mapping[str, Any], results: str) -> list[str]:
    """The paper table's files when params ``paper_reference`` is set, else nothing."""
    return [f"{results}/tables/paper.csv", f"{results}/tables/paper.md"] if config.get("paper_reference") else []


# ---------------------------------------------------------------------------------------------------------------
# paper table
# ---------------------------------------------------------------------------------------------------------------

def reference_table_rows(paths: Sequence[str | os.PathLike], columns: Sequence[str]) -> pd.DataFrame:
    """Main-table-shaped rows (``method``, ``head``, the titles of ``columns``) of reference metrics files."""
    from .tables import RETRIEVAL_METRICS, ZEROSHOT_METRICS

    titles = dict(RETRIEVAL_METRICS + ZEROSHOT_METRICS)
    rows = []
    for path in paths:
        data = read_json(path, "reference metrics")
        run = data["run"]
        row: dict[str, Any] = {"encoders": f"{run['vision']} + {run['text']}", "method": run["label"],
                               "head": REFERENCE_HEAD, "layers": "", "structure": False, "n_train_pairs": 0,
                               "n_seeds": 1}
        for dataset, res in data["datasets"].items():
            for metric, value in res["metrics"].items():
                if metric in titles and value is not None:
                    row[f"{dataset} {titles[metric]}"] = float(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = math.nan
    return frame


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def paper_table(main: pd.DataFrame, reference_rows: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Long table: per row of ours (main table + references) and per paper column, ours, paper and ours - paper.

    ``paper`` has the columns ``method``, ``head``, ``layers``, ``structure`` and one column per metric, titled as
    in the main table (``stl10 top-1``, ``flickr30k I2T R@1`` ...). A paper row without a counterpart is kept with
    ours = NaN, so that a missing method is visible.
    """
    metrics = [c for c in paper.columns if c not in ("method", *KEY_COLUMNS)]
    paper = paper.assign(structure=[_as_bool(v) for v in paper["structure"]])
    ours = pd.concat([main.assign(structure=[_as_bool(v) for v in main["structure"]]), reference_rows],
                     ignore_index=True)
    out, matched = [], set()
    for _, row in ours.iterrows():
        hit = paper[(paper["head"] == row["head"]) & (paper["layers"] == row["layers"])
                    & (paper["structure"] == bool(row["structure"]))]
        ref = hit.iloc[0] if len(hit) else None
        if ref is not None:
            matched.add(hit.index[0])
        for col in metrics:
            mine = float(row[col]) if col in row and pd.notna(row[col]) else math.nan
            theirs = float(ref[col]) if ref is not None and pd.notna(ref[col]) else math.nan
            out.append({"encoders": row.get("encoders", ""), "method": row["method"],
                        "paper_method": ref["method"] if ref is not None else "", "column": col, "ours": mine,
                        "paper": theirs, "diff": mine - theirs})
    for i, ref in paper.iterrows():
        if i not in matched:
            out += [{"encoders": "", "method": "(not run)", "paper_method": ref["method"], "column": col,
                     "ours": math.nan, "paper": float(ref[col]), "diff": math.nan} for col in metrics]
    return pd.DataFrame(out)


def _num(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def column_note(column: str, notes: Mapping[str, str]) -> str:
    """The note of the dataset a table column (``"<dataset> <metric>"``) belongs to, or ``""``."""
    return notes.get(column.split(" ", 1)[0], "")


def _cell(row: Any) -> str:
    """``ours / paper (ours - paper)``; a column not run shows "not run" in place of ours."""
    note = getattr(row, "note", "") or ""
    if note.startswith("not run") and not math.isfinite(row.ours):
        return f"not run / {_num(row.paper)}"
    return f"{_num(row.ours)} / {_num(row.paper)} ({_num(row.diff, True)})"


def paper_markdown(long: pd.DataFrame) -> str:
    """Markdown: one row per (encoders, method), each column ``ours / paper (ours - paper)``; the columns' notes
    (not run, other prompts) are listed under the table."""
    columns = list(dict.fromkeys(long["column"]))
    lines = ["| Encoders | Method | paper row | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---:|" * len(columns)]
    for (enc, method, pm), grp in long.groupby(["encoders", "method", "paper_method"], sort=False):
        by_col = {r.column: r for r in grp.itertuples()}
        cells = [_cell(by_col[c]) for c in columns]
        lines.append(f"| {enc} | {method} | {pm or 'n/a'} | " + " | ".join(cells) + " |")
    note = ("\nCells: ours / paper (ours - paper), in %. Ours = mean over seeds at the largest training size; "
            "paper = the published main table (docs/paper-profile.md).\n")
    if "note" in long.columns:
        noted = long[long["note"].fillna("") != ""].drop_duplicates("column")
        note += "".join(f"\n- {r.column}: {r.note}" for r in noted.itertuples())
        note += "\n" if len(noted) else ""
    return "\n".join(lines) + "\n" + note


def write_paper_table(main_csv: str | os.PathLike, references: Sequence[str | os.PathLike],
                      paper_csv: str | os.PathLike, out_csv: str | os.PathLike, out_md: str | os.PathLike, *,
                      notes: Mapping[str, str] | None = None) -> None:
    """Read the main table, the reference metrics and the paper's numbers; write the long CSV and the markdown.

    ``notes`` (``{dataset: note}``, data/placed.py ``column_notes``) fill a ``note`` column of the CSV and the lines
    under the markdown table; without notes both files are as before.
    """
    main = pd.read_csv(main_csv)
    paper = pd.read_csv(paper_csv)
    metrics = [c for c in paper.columns if c not in ("method", *KEY_COLUMNS)]
    missing = [c for c in metrics if c not in main.columns]
    if missing:
        log.warning("paper columns %s are not in %s (dataset not evaluated): shown as n/a", missing, main_csv)
        main = main.assign(**{c: math.nan for c in missing})
    long = paper_table(main, reference_table_rows(references, metrics), paper)
    if notes:
        long["note"] = [column_note(c, notes) for c in long["column"]]
    write_text_atomic(out_csv, long.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out_md, paper_markdown(long))

"""Tables of pipeline runs for comparing experiments (pandas in, pandas out)."""

from __future__ import annotations

import pandas as pd

KEY_METRICS = ("fid", "fid_real_floor", "kid", "coverage", "confident_share", "precision", "recall", "longrun_stable",
               "auroc_mixture", "test_cdiv", "test_loglik")


def experiments_table(runs: pd.DataFrame, sort_by: str | None = None, ascending: bool = True) -> pd.DataFrame:
    """One row per pipeline (parent) run: DVC experiment name, the params that vary between
    the rows, the metrics evaluate wrote onto the parent, and the run id.

    ``runs`` is the frame ``mlflow.search_runs`` returns (``tags.*``, ``params.*``,
    ``metrics.*`` columns). Rows without any metric are kept (a pipeline still running or
    failed before evaluation) and sort last.
    """
    if runs.empty:
        return pd.DataFrame(columns=["experiment", "run_id"])
    parents = runs[runs.get("tags.ebm.role", pd.Series(index=runs.index, dtype=object)) == "pipeline"]
    if parents.empty:
        return pd.DataFrame(columns=["experiment", "run_id"])
    param_cols = [c for c in parents.columns if c.startswith("params.")]
    varying = [c for c in param_cols if parents[c].astype(str).nunique(dropna=False) > 1]
    metric_cols = [c for c in parents.columns if c.startswith("metrics.") and parents[c].notna().any()]
    ordered = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in metric_cols]
    ordered += sorted(set(metric_cols) - set(ordered))
    table = pd.DataFrame({"experiment": parents["tags.dvc.exp_name"].values})
    for col in varying:
        table[col.removeprefix("params.")] = parents[col].values
    for col in ordered:
        table[col.removeprefix("metrics.")] = parents[col].values
    table["commit"] = parents["tags.git.commit"].str[:7].values
    table["run_id"] = parents["run_id"].values
    if sort_by:
        if sort_by not in table.columns:
            raise KeyError(f"cannot sort by {sort_by!r}; columns are {', '.join(table.columns)}")
        table = table.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        return table.to_markdown(index=False, floatfmt=".4g")
    if fmt == "table":
        with pd.option_context("display.max_columns", None, "display.width", 250, "display.float_format", "{:.4g}".format):
            return table.to_string(index=False)
    raise ValueError(f"unknown format {fmt!r}: use table, csv or markdown")

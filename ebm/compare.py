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


HIGHER_IS_BETTER = ("coverage", "confident_share", "precision", "recall", "longrun_stable", "auroc", "test_loglik")


def higher_is_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER)


def recipes_table(runs: pd.DataFrame, sort_by: str | None = None, ascending: bool = True,
                  confidence: float = 0.95) -> pd.DataFrame:
    """:func:`experiments_table` with the draws of one recipe in one row: pipeline runs whose
    params differ only by seeds (the tag ``ebm.recipe``; for runs logged before it, the params
    without the seed keys) form a row with ``n``, the seeds, and for each metric its mean (under
    the metric's name), and where a row has several draws, for the key metrics, ``<metric>_sd``, ``<metric>_ci``
    (the half width of the ``confidence`` interval of the mean, Student's t) and
    ``<metric>_worst`` (the worst draw: the highest FID, the lowest coverage). With ``sort_by``,
    ``<sort_by>_vs_best`` says whether each row's interval overlaps the best row's ("within
    noise") or not ("beyond noise"); a single draw has no interval ("one draw")."""
    from scipy import stats

    from ebm.config import is_seed

    flat = experiments_table(runs)
    if flat.empty:
        return flat.assign(n=pd.Series(dtype=int))
    parents = runs[runs["tags.ebm.role"] == "pipeline"].set_index("run_id").loc[flat["run_id"]]
    params = [c.removeprefix("params.") for c in parents.columns if c.startswith("params.")]
    seeds = [k for k in params if is_seed(k)]
    recipe = parents[[f"params.{k}" for k in params if not is_seed(k)]].map(str).agg("|".join, axis=1)
    if "tags.ebm.recipe" in parents:
        recipe = parents["tags.ebm.recipe"].where(parents["tags.ebm.recipe"].notna(), recipe)
    flat["recipe"] = recipe.values
    metric_names = {c.removeprefix("metrics.") for c in parents.columns if c.startswith("metrics.")}
    metrics = [c for c in flat.columns if c in metric_names]
    spread = [m for m in metrics if m in KEY_METRICS]  # the others: their mean only, to keep the table readable
    recipe_params = [c for c in flat.columns if c in params and not is_seed(c) and c not in metric_names]
    several = flat["recipe"].duplicated(keep=False).any()
    rows = []
    for _, draws in flat.groupby("recipe", sort=False):
        ids = draws["run_id"]
        row = {"experiment": ",".join(draws["experiment"].map(str)), "n": len(draws),
               **{c: draws[c].iloc[0] for c in recipe_params},  # one value within a recipe
               "seeds": "; ".join(f"{k}={','.join(parents.loc[ids, f'params.{k}'].map(str))}" for k in seeds
                                  if parents.loc[ids, f"params.{k}"].map(str).nunique() > 1)}
        for m in metrics:
            values = pd.to_numeric(draws[m], errors="coerce").dropna()
            k = len(values)
            row[m] = values.mean() if k else float("nan")
            if several and m in spread:
                sd = values.std(ddof=1) if k > 1 else float("nan")
                row[f"{m}_sd"] = sd
                row[f"{m}_ci"] = stats.t.ppf(0.5 + confidence / 2, k - 1) * sd / k ** 0.5 if k > 1 else float("nan")
                row[f"{m}_worst"] = (values.min() if higher_is_better(m) else values.max()) if k else float("nan")
        row["commit"] = draws["commit"].iloc[0]
        row["run_id"] = ",".join(ids.map(str))
        rows.append(row)
    table = pd.DataFrame(rows)
    if sort_by:
        if sort_by not in table.columns:
            raise KeyError(f"cannot sort by {sort_by!r}; columns are {', '.join(table.columns)}")
        table = table.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)
        if f"{sort_by}_ci" in table and table[sort_by].notna().any():
            best = table.iloc[0]
            lo, hi = table[sort_by] - table[f"{sort_by}_ci"], table[sort_by] + table[f"{sort_by}_ci"]
            overlap = (lo <= best[sort_by] + best[f"{sort_by}_ci"]) & (hi >= best[sort_by] - best[f"{sort_by}_ci"])
            table[f"{sort_by}_vs_best"] = [
                "best" if i == 0 else "one draw" if pd.isna(lo[i]) or pd.isna(best[f"{sort_by}_ci"])
                else "within noise" if overlap[i] else "beyond noise" for i in table.index]
    return table


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        return table.to_markdown(index=False, floatfmt=".4g")
    if fmt == "table":
        with pd.option_context("display.max_columns", None, "display.width", 250, "display.float_format", "{:.4g}".format):
            return table.to_string(index=False)
    raise ValueError(f"unknown format {fmt!r}: use table, csv or markdown")


REFERENCE_METRICS = ("fid", "fid_real_floor", "kid", "precision", "recall", "coverage", "confident_share",
                     "longrun_stable", "test_loglik")


def reference_draws(runs: pd.DataFrame, recipe_of, cpu: str | None = None) -> pd.DataFrame:
    """The pipeline runs in ``runs`` as reference draws: recipe hash (``recipe_of(run_id)``, e.g.
    from the run's logged params.yaml), experiment, seeds, CPU (the tag ``ebm.cpu``; ``cpu`` for
    runs logged without it) and the key metrics, one row each; runs without an FID (unfinished)
    are left out."""
    from ebm.config import is_seed

    parents = runs[(runs["tags.ebm.role"] == "pipeline")]
    if "metrics.fid" in parents:
        parents = parents[parents["metrics.fid"].notna()]
    else:
        parents = parents.iloc[:0]
    seeds = sorted(c for c in parents.columns if c.startswith("params.") and is_seed(c.removeprefix("params."))
                   and parents[c].notna().any())  # a stage run's own section params are not the parents'
    tagged = parents.get("tags.ebm.cpu", pd.Series([None] * len(parents), index=parents.index))
    table = pd.DataFrame({"recipe": [recipe_of(r) for r in parents["run_id"]],
                          "experiment": parents["tags.dvc.exp_name"].values,
                          **{c.removeprefix("params."): parents[c].values for c in seeds},
                          "cpu": tagged.where(tagged.notna(), cpu).values})
    for m in REFERENCE_METRICS:
        if f"metrics.{m}" in parents:
            table[m] = parents[f"metrics.{m}"].values
    return table.sort_values(["recipe", "experiment"], kind="stable").reset_index(drop=True)


def against_reference(metrics: dict, recipe: str, reference: pd.DataFrame) -> list[tuple[str, str]]:
    """How one run's metrics sit among the reference draws of its recipe: for each metric the
    draws have, ``(metric, "this run x; k draws: mean m, sd s, range [a, b]; inside / below / above")``."""
    draws = reference[reference["recipe"].astype(str) == recipe]
    out = []
    for m in REFERENCE_METRICS:
        if m not in draws or m not in metrics or draws[m].isna().all():
            continue
        values = pd.to_numeric(draws[m], errors="coerce").dropna()
        lo, hi, x = values.min(), values.max(), float(metrics[m])
        where = "inside their range" if lo <= x <= hi else ("below" if x < lo else "above") + " their range"
        out.append((m, f"this run {x:.4g}; {len(values)} draws: mean {values.mean():.4g}, sd "
                       f"{values.std(ddof=1) if len(values) > 1 else float('nan'):.2g}, range [{lo:.4g}, {hi:.4g}]: {where}"))
    return out

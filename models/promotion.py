"""The promotion rule: a candidate LSTM replaces persistence (and the current model) only when it
beats them beyond noise; ``decide_promotion`` applies it to a registry version and records why."""

from __future__ import annotations

import logging

import numpy as np

from btc_platform.lakehouse.model_registry import DECISION
from models.candidate import SKILL_HORIZONS, backtest_version, stored_metrics
from models.config import RetrainParams
from models.context import Context, resolve
from models.data import DataError
from models.features import window_origins
from models.registry import Registry, utcnow_iso
from models.train import backtest

log = logging.getLogger(__name__)


def promotion_rule(
    candidate_rmse: float,
    persistence_rmse: float,
    *,
    current_version: str | None = None,
    current_rmse: float | None = None,
    candidate_rmse_common: float | None = None,
    force: bool = False,
    n_windows: int | None = None,
    min_windows: int = 0,
    dm_p: float | None = None,
    dm_alpha: float = 1.0,
) -> tuple[str, str, bool]:
    """(status, reason, forced): "promoted" only if the candidate's RMSE is strictly below
    persistence, on at least ``min_windows`` test windows, with a one-sided Diebold-Mariano
    p-value ``dm_p`` below ``dm_alpha`` (a smaller difference is noise, not a win), and (when
    ``current_rmse`` is given) below the current model on the same windows; otherwise "rejected"
    with every reason, unless ``force`` (then promoted, forced=True)."""
    against = []
    if not candidate_rmse < persistence_rmse:
        against.append(f"RMSE {candidate_rmse:.2f} is not below persistence {persistence_rmse:.2f}")
    if n_windows is not None and n_windows < min_windows:
        against.append(f"only {n_windows} test windows, promotion needs {min_windows}")
    if dm_p is not None and not dm_p < dm_alpha:
        against.append(f"difference to persistence is within noise (Diebold-Mariano p {dm_p:.3f} >= {dm_alpha})")
    if current_rmse is not None:
        cand = candidate_rmse if candidate_rmse_common is None else candidate_rmse_common
        if not cand < current_rmse:
            against.append(f"RMSE {cand:.2f} is not below current model {current_version} ({current_rmse:.2f})")
    if not against:
        reason = f"beats persistence ({candidate_rmse:.2f} < {persistence_rmse:.2f})"
        if current_rmse is not None:
            cand = candidate_rmse if candidate_rmse_common is None else candidate_rmse_common
            reason += f" and current model {current_version} ({cand:.2f} < {current_rmse:.2f})"
        return "promoted", reason, False
    if force:
        return "promoted", "FORCED despite: " + "; ".join(against), True
    return "rejected", "; ".join(against), False


def served_point(metrics: dict, min_windows: int | None = None, dm_alpha: float | None = None) -> dict:
    """Which point model the promotion rule would serve on these metrics (lstm or persistence),
    and its skill per horizon (0 for persistence, by construction)."""
    o = metrics["overall"]
    status, reason, _ = promotion_rule(
        o["model_rmse"], o["persistence_rmse"], n_windows=metrics["n_windows"],
        min_windows=RetrainParams.default("min_promotion_windows") if min_windows is None else min_windows,
        dm_p=o.get("dm_p_model_better"), dm_alpha=RetrainParams.default("dm_alpha") if dm_alpha is None else dm_alpha,
    )
    model = "lstm" if status == "promoted" else "persistence"
    rows = {r["horizon"]: r for r in metrics["per_horizon"]}
    skill = {f"h{h}": (rows[h]["model_skill"] if model == "lstm" else 0.0) for h in SKILL_HORIZONS if h in rows}
    return {"model": model, "reason": reason, "skill": skill}


def rmse_on_common_windows(registry: Registry, cand_version: str, other_version: str,
                           ctx: Context) -> tuple[float, float, int]:
    """RMSE (all steps) of candidate and another model on the candidate's test windows."""
    cand, frame, split, bt_cand, _ = backtest_version(registry, cand_version, ctx)
    other = registry.load_forecaster(other_version)
    steps = min(cand.config.horizon, other.config.horizon)
    valid = window_origins(frame, other.config.lookback, other.config.horizon).origins
    common = np.intersect1d(split.test, valid)
    if len(common) == 0:
        raise DataError(f"no test window usable by both {cand_version} and {other_version}")
    bt_other = backtest(other, frame, common)
    keep = np.isin(split.test, common)

    def rmse(pred, actual):
        return float(np.sqrt(np.mean((pred[:, :steps] - actual[:, :steps]) ** 2)))

    return rmse(bt_cand["forecasts"]["model"][keep], bt_cand["actual"][keep]), rmse(
        bt_other["forecasts"]["model"], bt_other["actual"]
    ), int(len(common))


def decide_promotion(version: str, params: dict | RetrainParams | None = None) -> dict:
    """Promote ``version`` to ``current`` only if it beats persistence (and the current model,
    per policy) on the latest test window, or if ``force_promotion``; record the decision."""
    ctx = resolve(params)
    registry = ctx.registry()
    force = ctx.params.force_promotion
    if registry.exists(version, DECISION):
        previous = registry.read_json(version, DECISION)
        if previous["status"] == "promoted" or not force:
            log.info("decision for %s already made: %s (%s)", version, previous["status"], previous["reason"])
            return previous
    metrics = stored_metrics(ctx, registry, version)
    overall = metrics["overall"]
    current = registry.current_version()
    checks: dict = {"candidate_rmse": overall["model_rmse"], "persistence_rmse": overall["persistence_rmse"],
                    "current_version": current, "test_windows": metrics["n_windows"],
                    "dm_p_model_better": overall.get("dm_p_model_better")}
    if current and current != version and ctx.policy == "beat_current_and_persistence":
        cand_common, cur_rmse, n_common = rmse_on_common_windows(registry, version, current, ctx)
        checks.update({"current_rmse": cur_rmse, "candidate_rmse_common": cand_common, "common_windows": n_common})
    status, reason, forced = promotion_rule(
        overall["model_rmse"],
        overall["persistence_rmse"],
        current_version=None if current == version else current,
        current_rmse=checks.get("current_rmse"),
        candidate_rmse_common=checks.get("candidate_rmse_common"),
        force=force,
        n_windows=metrics["n_windows"],
        min_windows=ctx.params.min_promotion_windows,
        dm_p=overall.get("dm_p_model_better"),
        dm_alpha=ctx.params.dm_alpha,
    )
    if current == version:
        status, reason, forced = "promoted", "already the current model", False
    decision = {
        "version": version,
        "symbol": ctx.symbol,
        "status": status,
        "reason": reason,
        "forced": forced,
        "policy": ctx.policy,
        "decided_at": utcnow_iso(),
        **checks,
    }
    registry.write_json(version, DECISION, decision)
    if status == "promoted" and current != version:
        registry.set_current(version, reason, forced=forced)
    log.info("promotion decision for %s of %s: %s - %s", version, ctx.symbol, status, reason)
    return decision

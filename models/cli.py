"""Command line: ``python -m models.cli train|predict|evaluate``.

* ``train``    one retrain run as the DAG does it: check history, train a candidate on everything
               before the latest test window, evaluate it against persistence, drift and the band
               baselines, promote it or keep it as a rejected candidate, publish the predictions and
               prediction_metrics tables and serve the next 24 h (future_predictions). ``--as-of-version N`` trains on hourly_metrics as it was
               at Delta version N (time travel; the version a model records in training.json).
* ``predict``  serve the next 24 h (champion point: current LSTM else persistence; best band) into
               the future_predictions table.
* ``evaluate`` offline evaluation of a candle CSV or an hourly_metrics Delta table: train on the
               data before ``--test-from`` (default: the last 6 months), print the point and band
               tables (``--csv`` writes them); ``--retrain-every 30d``: rolling-origin backtest.

Exit codes: 0 ok, 2 bad arguments/configuration, 3 not enough history, 1 other failures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from models.config import RetrainParams

log = logging.getLogger("models.cli")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="candle CSV (open_time_utc,open,high,low,close,volume,...) or hourly_metrics "
                        "URI (file:// or hdfs://); default: hourly_metrics under BTC_STORAGE_ROOT")
    parser.add_argument("--symbol", help="symbol to read from hourly_metrics (default: first of BTC_BINANCE_SYMBOLS)")
    parser.add_argument("--lookback", type=int, default=None,
                        help=f"input hours per window (default {RetrainParams.default('lookback')})")
    parser.add_argument("--horizon", type=int, default=None,
                        help=f"forecast hours (default {RetrainParams.default('horizon')})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"maximum epochs; EarlyStopping may stop earlier (default {RetrainParams.default('epochs')})")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def _as_of(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of-version", type=int, default=None, metavar="N",
                        help="read hourly_metrics at Delta table version N (time travel) instead of the current one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train, evaluate, promote-or-keep and publish one candidate")
    _common(p_train)
    p_train.add_argument("--test-hours", type=int, default=None,
                         help="length of the test window (latest hours) used to judge the candidate "
                         f"(default {RetrainParams.default('test_hours')})")
    p_train.add_argument("--force-promotion", action="store_true",
                         help="make the candidate current even if it loses to persistence/current (recorded)")
    _as_of(p_train)

    p_pred = sub.add_parser("predict", help="forecast the next hours with the current model")
    _common(p_pred)

    p_eval = sub.add_parser("evaluate", help="offline evaluation against persistence and drift baselines")
    _common(p_eval)
    p_eval.add_argument("--test-from", default=None,
                        help="first forecast origin of the test window, YYYY-MM-DD[THH:MM] UTC "
                        "(default: the last 6 months of the data)")
    _as_of(p_eval)
    p_eval.add_argument("--json", dest="json_out", default=None, help="also write the full metrics as JSON to this file")
    p_eval.add_argument("--csv", dest="csv_out", default=None,
                        help="also write the metrics table (per horizon + overall) as CSV to this file")
    p_eval.add_argument("--retrain-every", default=None, metavar="EVERY",
                        help="rolling-origin backtest: refit every EVERY (30d, 720h, 4w) over the test span "
                        "(default: one fit before --test-from)")
    return parser


def _params(args) -> dict:
    params = {k: getattr(args, k, None) for k in ("lookback", "horizon", "epochs", "symbol", "as_of_version")}
    params["data_uri"] = args.data
    if getattr(args, "test_hours", None):
        params["test_hours"] = args.test_hours
    params["force_promotion"] = bool(getattr(args, "force_promotion", False))
    return {k: v for k, v in params.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from btc_platform.lakehouse.lake import LegacyLayoutError
    from btc_platform.lakehouse.storage import StorageError
    from btc_platform.settings import SettingsError, get_settings
    from models import pipeline, promotion, serving
    from models.data import DataError, InsufficientHistoryError
    from models.offline import evaluate_offline
    from models.registry import ModelNotFoundError

    try:
        settings = get_settings()
        if args.command == "evaluate":
            if not args.data:
                raise ValueError("evaluate needs --data FILE_OR_URI")
            from models.config import ModelConfig

            cfg = ModelConfig().replace(lookback=args.lookback, horizon=args.horizon, epochs=args.epochs)
            result = evaluate_offline(
                args.data, args.test_from, cfg, args.symbol, settings, as_of_version=args.as_of_version,
                retrain_every=args.retrain_every,
            )
            sys.stdout.write(result["table"] + "\n")
            sk = result["skill"]
            log.info("served point model by the promotion rule: %s (%s)", result["served_point"]["model"],
                     result["served_point"]["reason"])
            log.info(
                "LSTM skill h1 %.4f, h6 %.4f, h12 %.4f, h24 %.4f; served band %s coverage %s, interval-score "
                "skill vs constant %s, vs EWMA %s; training %.1f s (%d epochs)",
                sk["h1"], sk["h6"], sk["h12"], sk["h24"], sk.get("band_best"), sk.get("band_coverage"),
                sk.get("band_winkler_skill_vs_constant"), sk.get("band_winkler_skill_vs_ewma"),
                result["train_seconds"], result["epochs_run"],
            )
            if args.csv_out:
                from models.backtest import metrics_frame

                metrics_frame(result["metrics"]).to_csv(args.csv_out, index=False)
                log.info("metrics table written to %s", args.csv_out)
            if args.json_out:
                with open(args.json_out, "w", encoding="utf-8") as fh:
                    json.dump({k: v for k, v in result.items() if k != "table"}, fh, indent=2, default=str)
        elif args.command == "train":
            params = _params(args)
            pipeline.check_sufficiency(params)
            cand = pipeline.train_candidate(params)
            pipeline.evaluate_candidate(cand["version"], params)
            decision = promotion.decide_promotion(cand["version"], params)
            pipeline.write_outputs(cand["version"], params)
            log.info("candidate %s: %s (%s)", cand["version"], decision["status"], decision["reason"])
            served = serving.predict_future(params)  # after every retrain: champion point + best band
            log.info("served forecast: %s", json.dumps({k: v for k, v in served.items() if k != "predicted_close"}))
        else:
            result = serving.predict_future(_params(args))
            log.info("predict: %s", json.dumps(result))
    except InsufficientHistoryError as exc:
        log.error("%s", exc)
        return 3
    except (ModelNotFoundError, DataError, StorageError) as exc:
        log.error("fatal: %s", exc)
        return 1
    except (SettingsError, ValueError, LegacyLayoutError) as exc:
        log.error("fatal: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make clean-data``: delete the local data directory (``BTC_DATA_DIR``), unless it still holds
messages the producer accepted and Kafka never confirmed.

Those are in the producer's spool (``<data_dir>/spool/producer.jsonl``, one message a line) and
its journal (``producer.wal``, less the ids confirmed in ``producer.wal.delivered``): the next
producer start delivers them. Deleting them loses data nobody else holds, so the command refuses,
naming the files and counts, unless ``--force`` (``make clean-data FORCE=1``). Run it with the
platform stopped (``make clean-data`` stops it first).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from btc_platform.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

log = logging.getLogger("btc_platform.ops.clean_data")

EXIT_OK, EXIT_REFUSED, EXIT_CONFIG = 0, 1, 2


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()] if path.is_file() else []


def _message_id(line: bytes) -> str | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc.get("message_id") if isinstance(doc, dict) else None


def undelivered(settings: Settings) -> dict[Path, int]:
    """Per file of the spool and journal, the messages in it that Kafka never confirmed."""
    spool = Path(settings.producer_spool_path)
    journal = Path(settings.producer_journal_path)
    delivered_path = journal.with_name(journal.name + ".delivered")
    delivered = {line.decode(errors="replace").strip() for line in _lines(delivered_path)}
    # a journal line whose id cannot be read counts as undelivered (never delete what is unknown)
    sending = spool.with_name(spool.name + ".sending")  # a spool being delivered by a producer that died
    pending = {
        spool: len(_lines(spool)),
        sending: len(_lines(sending)),
        journal: sum(1 for line in _lines(journal) if _message_id(line) not in delivered),
    }
    return {path: count for path, count in pending.items() if count}


def _refuse_dangerous(data_dir: Path) -> None:
    resolved = data_dir.resolve()
    if resolved in {Path("/"), Path.home().resolve(), PROJECT_ROOT.resolve()} or len(resolved.parts) < 3:
        raise SettingsError(f"BTC_DATA_DIR={data_dir} ({resolved}) is not a data directory to delete")


def clean(settings: Settings, *, force: bool = False) -> int:
    """Delete ``settings.data_dir``; returns the exit code (1: refused, undelivered messages)."""
    data_dir = Path(settings.data_dir)
    _refuse_dangerous(data_dir)
    pending = undelivered(settings)
    if pending and not force:
        listed = ", ".join(f"{path} ({count} message(s))" for path, count in pending.items())
        log.error("not deleting %s: the producer has messages Kafka never confirmed in %s; start the platform "
                  "(make run) so it delivers them, or delete them too with make clean-data FORCE=1", data_dir, listed)
        return EXIT_REFUSED
    if pending:
        log.warning("FORCE: deleting %d undelivered message(s) with %s", sum(pending.values()), data_dir)
    if data_dir.exists():
        shutil.rmtree(data_dir)
        log.info("deleted %s", data_dir)
    else:
        log.info("%s does not exist: nothing to delete", data_dir)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clean_data", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="delete undelivered spool/journal messages too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return clean(load_settings(), force=args.force)
    except SettingsError as exc:
        log.error("clean-data: %s", exc)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

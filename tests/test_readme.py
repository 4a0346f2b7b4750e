"""The README names only what exists, and the defaults it quotes are the code's.

Checked on the README's code (inline code spans and fenced blocks), against the code itself:

* it stays a guide: at most ``MAX_LINES`` lines, and the pictures it shows exist;
* every ``make <target>`` is a target of the Makefile, and every ``VAR=value`` given to make is a variable the
  Makefile reads;
* every ``--flag`` is an option of the CLI (and subcommand) it is written with (``btc-*`` console scripts from pyproject.toml,
  ``python -m models.cli``, ``spark_jobs/<job>.py``), read from the CLI's own argparse parser, not from its help
  text; a flag written without its command must belong to some CLI of the project;
* every ``BTC_*`` name is a field of ``Settings``; a value given as ``BTC_X=value`` is one the settings accept;
* every default it quotes (a configuration-table row, "``BTC_X`` (default ``v``)", "``BTC_X`` defaults to
  ``v``", the same for a ``--flag``, and the model's history needs) equals the code's.

The checks are functions of the README's text, so each is also run on a deliberately wrong line below: a check
that cannot fail would pass those too.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from btc_platform.settings import ENV_PREFIX, PROJECT_ROOT, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
MAX_LINES = 300

_FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_SPAN = re.compile(r"`([^`]+)`")
_SETTING = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+\b")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_MAKE = re.compile(r"(?<![\w/.-])make\s+([a-z][a-z-]*)((?:\s+[A-Z_]+=\S*)*)")
_MAKE_VAR = re.compile(r"([A-Z_]+)=")
_ASSIGN = re.compile(rf"\b({ENV_PREFIX}[A-Z0-9_]+)=(\S*)")
_TABLE_ROW = re.compile(rf"^\|\s*`({ENV_PREFIX}[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|", re.M)
_QUOTED_DEFAULT = re.compile(r"`(BTC_[A-Z0-9_]+|--[a-z][a-z0-9-]*)[^`]*`\s*(?:\((?:the\s+)?default\s+|defaults\s+to\s+)`([^`]+)`")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


# ---- the README's code ------------------------------------------------------------------------------------------
def code_snippets(text: str) -> list[str]:
    """Each line of a fenced block and each inline code span (one line, wrapped lines joined)."""
    snippets = [line for block in _FENCE.findall(text) for line in block.splitlines() if line.strip()]
    prose = _FENCE.sub("", text)
    snippets += [" ".join(span.split()) for span in _SPAN.findall(prose)]
    return snippets


# ---- what the code offers ---------------------------------------------------------------------------------------
def makefile_targets(makefile: str) -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*)\s*:(?!=)", makefile, re.M))


def makefile_reads(makefile: str, variable: str) -> bool:
    return re.search(rf"\$\$?[({{]{re.escape(variable)}\b", makefile) is not None


def setting_fields() -> dict[str, str]:
    """``BTC_X`` -> Settings field name."""
    return {f"{ENV_PREFIX}{name.upper()}": name for name in Settings.model_fields}


@cache
def cli_entry_points() -> dict[str, str]:
    """Command as the README writes it -> ``module:function`` of its main."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = dict(scripts)
    for target in scripts.values():
        module = target.split(":")[0]
        commands[f"python -m {module}"] = target
        if module.startswith("spark_jobs."):
            commands[f"{module.replace('.', '/')}.py"] = target
    return commands


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


@cache
def cli_parser(target: str) -> argparse.ArgumentParser:
    """The argparse parser a CLI's main builds, captured when main asks it to parse (nothing else runs)."""
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Parser(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        main([])
    except _Parser as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{target} returned without parsing arguments")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}  # fmt: skip


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def cli_options(target: str, subcommand: str | None = None) -> dict[str, argparse.Action]:
    """Options of a CLI: the top level's and its subcommand's (every subcommand's when none is named)."""
    parser = cli_parser(target)
    subs = _subparsers(parser)
    chosen = [subs[subcommand]] if subcommand in subs else list(subs.values())
    options = _options(parser)
    for sub in chosen:
        options.update(_options(sub))
    return options


#: Defaults a CLI leaves to the code it calls (its argparse default is None, meaning "the code's default").
def _models_defaults() -> dict[str, object]:
    from models.config import ModelConfig, RetrainParams

    return {"--lookback": ModelConfig.lookback, "--horizon": ModelConfig.horizon, "--epochs": ModelConfig.epochs,
            "--test-hours": RetrainParams.default("test_hours")}  # fmt: skip


EFFECTIVE_DEFAULTS: dict[str, Callable[[], dict[str, object]]] = {"models.cli:main": _models_defaults}


def flag_defaults(flag: str) -> list[object]:
    """The default of ``flag`` in each CLI that has it (the effective one where argparse's is None)."""
    found = []
    for target in sorted(set(cli_entry_points().values())):
        action = cli_options(target).get(flag)
        if action is None:
            continue
        default = action.default
        if default is None and target in EFFECTIVE_DEFAULTS:
            default = EFFECTIVE_DEFAULTS[target]().get(flag)
        found.append(default)
    return found


# ---- values -----------------------------------------------------------------------------------------------------
def render(value: object) -> str:
    """A default as the README writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value).replace(str(PROJECT_ROOT), "<repo>")
    return "" if value is None else str(value)


def same_value(quoted: str, value: object) -> bool:
    quoted = quoted.strip()
    if quoted == "empty":
        return render(value) == ""
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            return float(quoted.replace(",", "")) == float(value)
        except ValueError:
            return False
    return quoted == render(value)


def setting_default(name: str) -> object:
    return Settings.model_fields[setting_fields()[name]].default


# ---- the checks -------------------------------------------------------------------------------------------------
def check_length(text: str) -> list[str]:
    lines = len(text.splitlines())
    return [] if lines <= MAX_LINES else [f"README has {lines} lines, at most {MAX_LINES}: move reference to docs/"]


def check_images(text: str) -> list[str]:
    return [f"picture {path} does not exist" for path in _IMAGE.findall(text) if not (ROOT / path).is_file()]


def check_make(text: str) -> list[str]:
    makefile = MAKEFILE.read_text()
    targets = makefile_targets(makefile)
    problems = []
    for snippet in code_snippets(text):
        for target, assignments in _MAKE.findall(snippet):
            if target not in targets:
                problems.append(f"`make {target}` is not a Makefile target (in `{snippet}`)")
            for variable in _MAKE_VAR.findall(assignments):
                if not makefile_reads(makefile, variable):
                    problems.append(f"`make {target} {variable}=...`: the Makefile does not read {variable}")
    return problems


def _commands_in(snippet: str) -> Iterator[tuple[int, str, str | None]]:
    """(position, entry point, subcommand or None) of each CLI named in ``snippet``."""
    commands = cli_entry_points()
    names = sorted(commands, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.-])(?:\.venv/bin/)?(" + "|".join(re.escape(n) for n in names) + r")(?![\w-])(?:\s+([a-z][a-z-]*))?")
    for match in pattern.finditer(snippet):
        yield match.start(), commands[match.group(1)], match.group(2)


def check_flags(text: str) -> list[str]:
    every = {flag for target in set(cli_entry_points().values()) for flag in cli_options(target)}
    problems = []
    for snippet in code_snippets(text):
        commands = list(_commands_in(snippet))
        for _, target, sub in commands:
            subs = _subparsers(cli_parser(target))
            if subs and sub is not None and sub not in subs:
                problems.append(f"{sub} is not a command of {target} ({', '.join(subs)}; in `{snippet}`)")
        for match in _FLAG.finditer(snippet):
            flag = match.group(0)
            owner = [c for c in commands if c[0] < match.start()]
            if owner:
                _, target, sub = owner[-1]
                if flag not in cli_options(target, sub):
                    problems.append(f"{flag} is not an option of {target}{' ' + sub if sub else ''} (in `{snippet}`)")
            elif flag not in every:
                problems.append(f"{flag} is an option of no CLI of the project (in `{snippet}`)")
    return problems


def check_settings(text: str) -> list[str]:
    known = setting_fields()
    problems = [f"{name} is not a setting (Settings has no field {name.removeprefix(ENV_PREFIX).lower()})"
                for name in sorted(set(_SETTING.findall(text))) if name not in known]  # fmt: skip
    for snippet in code_snippets(text):
        for name, value in _ASSIGN.findall(snippet):
            if name in known:
                try:
                    Settings(**{known[name]: value})
                except ValueError as exc:
                    problems.append(f"{name}={value} is not a value the settings accept: {exc}")
    return problems


def check_defaults(text: str) -> list[str]:
    known = setting_fields()
    problems = []
    quoted = _TABLE_ROW.findall(text)
    quoted += [(name, f"`{value}`") for name, value in _QUOTED_DEFAULT.findall(_FENCE.sub("", text))]
    for name, cell in quoted:
        value = cell.strip()
        if value.startswith("`") and value.endswith("`"):
            value = value[1:-1]
        elif value != "empty":
            problems.append(f"{name}: quote its default as a code span or 'empty', not {cell!r}")
            continue
        if name.startswith("--"):
            defaults = flag_defaults(name)
            if not any(same_value(value, d) for d in defaults):
                problems.append(f"{name} defaults to {', '.join(render(d) for d in defaults) or 'nothing'}, "
                                f"the README says {value}")  # fmt: skip
        elif name in known and not same_value(value, setting_default(name)):
            problems.append(f"{name} defaults to {render(setting_default(name))!r}, the README says {value!r}")
    return problems


def _model_facts() -> list[tuple[re.Pattern, int, str]]:
    from models.config import ModelConfig, RetrainParams
    from models.features import hours_needed

    config = ModelConfig()
    return [
        (re.compile(r"at least \**([\d,]+) hours\** of gap-free", re.I), hours_needed(config, RetrainParams.default("test_hours")),
         "hours of history a retrain needs with the defaults (models.features.hours_needed)"),
        (re.compile(r"\b(\d+) h lookback"), config.lookback, "ModelConfig.lookback"),
        (re.compile(r"\b(\d+) h horizon"), config.horizon, "ModelConfig.horizon"),
        (re.compile(r"\b(\d+) h test window"), RetrainParams.default("test_hours"), "models.config.RetrainParams.test_hours"),
    ]


def check_model_facts(text: str) -> list[str]:
    problems = []
    for pattern, value, what in _model_facts():
        for found in pattern.findall(text):
            if int(found.replace(",", "")) != value:
                problems.append(f"the README says {found} for the {what}, the code says {value}")
    return problems


CHECKS = (check_length, check_images, check_make, check_flags, check_settings, check_defaults, check_model_facts)


def readme_problems(text: str) -> list[str]:
    return [problem for check in CHECKS for problem in check(text)]


# ---- the tests --------------------------------------------------------------------------------------------------
def test_readme_names_only_what_exists_and_quotes_the_code_defaults():
    assert readme_problems(README.read_text()) == []


def test_the_readme_mentions_what_the_checks_cover():
    """The checks see the README's commands, flags, settings and quoted defaults (not an empty extraction)."""
    text = README.read_text()
    snippets = code_snippets(text)
    assert any(_MAKE.search(s) for s in snippets)
    assert any(_FLAG.search(s) and list(_commands_in(s)) for s in snippets)
    assert len(_TABLE_ROW.findall(text)) >= 10
    assert all(pattern.search(text) for pattern, _, _ in _model_facts())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Run `make rnu` to start.", "`make rnu` is not a Makefile target"),
        ("Run `make run SORCE=simulate`.", "the Makefile does not read SORCE"),
        ("```bash\nbtc-backfill --source file --fiel x.csv\n```", "--fiel is not an option of spark_jobs.backfill_job:main"),
        ("`btc-models train --test-from 2024-01-01`", "--test-from is not an option of models.cli:main train"),
        ("`python -m models.cli evaluate --test-from 2024-01-01 --retrain-evry 30d`", "--retrain-evry is not an option"),
        ("Pass `--no-such-flag`.", "--no-such-flag is an option of no CLI"),
        ("`btc-models trian --epochs 3`", "trian is not a command of models.cli:main"),
        ("Set `BTC_KAFKA_TOPICS`.", "BTC_KAFKA_TOPICS is not a setting"),
        ("`BTC_KAFKA_PARTITIONS=many make run`", "BTC_KAFKA_PARTITIONS=many is not a value the settings accept"),
        ("| `BTC_KAFKA_TOPIC` | `bitcoinTopic` | topic |", "BTC_KAFKA_TOPIC defaults to 'cryptoTopic'"),
        ("| `BTC_STORAGE_ROOT` | `file:///data` | root |", "BTC_STORAGE_ROOT defaults to ''"),
        ("| `BTC_KAFKA_TOPIC` | cryptoTopic | topic |", "quote its default as a code span"),
        ("`BTC_SUPERVISOR_INTERVAL_S` (default `30`)", "BTC_SUPERVISOR_INTERVAL_S defaults to '20.0'"),
        ("`BTC_MAINTENANCE_AIRFLOW_RETENTION_DAYS` defaults to `14`", "defaults to '7'"),
        ("`--test-hours` (default `168`)", "--test-hours defaults to 672"),
        ("The model needs at least 500 hours of gap-free history.", "the README says 500 for the hours of history"),
        ("(12 h lookback, 24 h horizon, a 168 h test window)", "the README says 168 for the models.config.RetrainParams.test_hours"),
        ("![dashboard](docs/dashboard/nothing.png)", "picture docs/dashboard/nothing.png does not exist"),
        ("\n" * MAX_LINES + "one line too many", f"README has {MAX_LINES + 1} lines"),
    ],
)
def test_a_wrong_line_is_caught(line, expected):
    problems = readme_problems(line)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "line",
    [
        "`make run SOURCE=simulate`, then `make sql Q=\"SELECT 1\"`",
        "`btc-models train --test-hours 672 --force-promotion`",
        "`python -m models.cli evaluate --test-from 2024-01-01 --retrain-every 30d`",
        "`spark_jobs/backfill_job.py --source file --file x.csv --overwrite-stream`",
        "| `BTC_KAFKA_TOPIC` | `cryptoTopic` | topic |",
        "| `BTC_STORAGE_ROOT` | empty | root |",
        "| `BTC_DATA_DIR` | `<repo>/.data` | data |",
        "| `BTC_BINANCE_POLL_INTERVAL_S` | `1` | poll |",
        "`BTC_SUPERVISOR_INTERVAL_S` (default `20`)",
        "`--test-hours` (default `672`)",
        "`BTC_STORAGE_ROOT=hdfs://127.0.0.1:8020/bitcoin make run`",
    ],
)
def test_a_right_line_passes(line):
    assert readme_problems(line) == []

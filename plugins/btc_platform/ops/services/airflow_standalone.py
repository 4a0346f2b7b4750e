"""``airflow standalone`` whose scheduler and triggerer serve no task logs over HTTP.

Airflow 3.3 starts a log server in the scheduler (``[logging] worker_log_server_port``, 8793) and
in the triggerer (``trigger_log_server_port``, 8794) that binds every interface: the host is
hard-coded (``airflow.utils.serve_logs.core``), no setting moves it to 127.0.0.1. The platform
does not need them: all its Airflow components run on this machine and the API server reads
the task logs from the shared log folder (``AIRFLOW__LOGGING__BASE_LOG_FOLDER``). Both commands
take ``--skip-serve-logs``, but ``airflow standalone`` starts them without arguments; this entry
point runs the same standalone command with that flag added to those two.

    python -m btc_platform.ops.services.airflow_standalone      (what btc-services starts)
"""

from __future__ import annotations

import sys

#: the ``airflow`` subcommands that start a log server unless told not to
SERVE_LOGS_COMMANDS = frozenset({"scheduler", "triggerer"})
SKIP_SERVE_LOGS = "--skip-serve-logs"


def without_log_server(command: list[str]) -> list[str]:
    """``command`` (an ``airflow`` subcommand and its arguments) with ``--skip-serve-logs``
    added when it would start a log server."""
    if command and command[0] in SERVE_LOGS_COMMANDS and SKIP_SERVE_LOGS not in command:
        return [*command, SKIP_SERVE_LOGS]
    return list(command)


def main() -> int:
    """``airflow standalone`` through Airflow's own CLI entry, its components without log servers."""
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import standalone_command

    class SubCommand(standalone_command.SubCommand):
        def __init__(self, parent, name: str, command: list[str], env: dict[str, str]):
            super().__init__(parent, name, without_log_server(command), env)

    standalone_command.SubCommand = SubCommand  # looked up by StandaloneCommand.run at each start
    sys.argv = ["airflow", "standalone"]
    airflow_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

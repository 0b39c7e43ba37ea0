"""``harness.run --backend postgres``: the flags it takes and refuses (no PostgreSQL needed)."""

from __future__ import annotations

import pytest

from harness.experiment.config import Backend, RunConfig, repeat_command
from harness.experiment.faults import FaultKind, parse_crashes
from harness.run import main


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "postgres", "--nemesis", "pause"], "'pause' is not one of kill-postmaster"),
        (["--nemesis", "kill-postmaster"], "'kill-postmaster' is not one of kill-participant"),
        (["--backend", "postgres", "--crash", "participant:before-vote"], "only clients and partition"),
        (["--backend", "postgres", "--crash", "client:terminate-during-prepare:0"], "positive integer"),
        (["--crash", "client:terminate-after-prepare"], "crash point must be one of"),
        (["--backend", "mysql"], "invalid Backend value"),
        (["--backend", "postgres", "--no-durable"], "do not apply to --backend postgres"),
    ],
)
def test_bad_postgres_flags_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(10)
def test_postgres_crash_points_are_read_for_clients_and_the_partition() -> None:
    specs = ("client:terminate-during-commit:2", "client2:after-prepare", "partition:between-phases")
    assert parse_crashes(specs, 3, 2, postgres=True) == {
        "client1": "terminate-during-commit:2",
        "client2": "after-prepare",
        "partition": "between-phases",
    }


@pytest.mark.timeout(10)
def test_the_repeat_command_names_the_backend_and_its_faults() -> None:
    config = RunConfig(backend=Backend.POSTGRES, nemesis=(FaultKind.KILL_POSTMASTER, FaultKind.CUT))
    command = repeat_command(config, 7)
    assert "--backend postgres" in command and "--nemesis kill-postmaster,cut" in command
    assert "--backend" not in repeat_command(RunConfig(), 7)

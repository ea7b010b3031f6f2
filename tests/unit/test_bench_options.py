"""The benchmarks' `--worker-env` option (benchmarks/churnwatch_run.py), shared by both CLIs."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.churnwatch_run import add_worker_env_option, worker_env


def parsed(*argv: str) -> dict[str, str]:
    parser = argparse.ArgumentParser()
    add_worker_env_option(parser)
    return worker_env(parser, parser.parse_args(argv).worker_env)


def test_settings_become_the_workers_extra_environment() -> None:
    assert parsed(
        "--worker-env", "CHURNWATCH_STATE__DECODED_CACHE_MAX=0",
        "--worker-env", "CHURNWATCH_BATCH_WITHIN_SECONDS=a=b",
    ) == {
        "CHURNWATCH_STATE__DECODED_CACHE_MAX": "0",
        "CHURNWATCH_BATCH_WITHIN_SECONDS": "a=b",
    }  # fmt: skip
    assert parsed() == {}


@pytest.mark.parametrize("item", ["FOO=1", "CHURNWATCH_X", "=CHURNWATCH_X"])
def test_anything_but_a_churnwatch_setting_is_refused(
    item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parsed("--worker-env", item)
    assert "CHURNWATCH_NAME=VALUE" in capsys.readouterr().err

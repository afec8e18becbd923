"""Flags, FERCODEC_<NAME> environment variables, their precedence, and README's flag table against them."""

from __future__ import annotations

import pytest

from ferserver.config import Config, parse


def test_defaults():
    c = parse([], env={})
    assert (c.port, c.metrics_port, c.device, c.max_batch) == (50051, 9100, "auto", 0)


def test_env_then_flags_win():
    env = {"FERCODEC_PORT": "6000", "FERCODEC_MAX_WAIT_MS": "2.5", "FERCODEC_DEVICE": "cpu"}
    assert parse([], env=env) == Config(port=6000, max_wait_ms=2.5, device="cpu")
    assert parse(["--port", "7000"], env=env).port == 7000


@pytest.mark.parametrize("argv, env", [(["--device", "tpu"], {}), ([], {"FERCODEC_PORT": "abc"}), (["--max-batch", "-1"], {}), (["--decode-workers", "-2"], {}),
                                        # grpc would wrap 99999 to 34463 and serve there; the metrics server raised OverflowError
                                        (["--port", "99999"], {}), (["--port", "-5"], {}), ([], {"FERCODEC_PORT": "65536"}), (["--metrics-port", "70000"], {}),
                                        (["--health-port", "-2"], {}), (["--grace-s", "-1"], {}), (["--grace-s", "nan"], {}), (["--max-connection-age-s", "-3"], {}),
                                        (["--threads", "-1"], {}),  # torch raised RuntimeError
                                        # each was taken: grpc read -5 as no limit and 0 refused every request; inf waited
                                        # (or refused every call with a deadline) for ever; nan compared as never due
                                        (["--max-message-bytes", "-5"], {}), (["--max-message-bytes", "0"], {}), (["--max-wait-ms", "inf"], {}),
                                        (["--max-wait-ms", "nan"], {}), (["--grace-s", "inf"], {}),
                                        # found after the models loaded, with a line of grpc's own first
                                        (["--port", "50070", "--metrics-port", "50070"], {}), (["--port", "50070", "--health-port", "50070"], {})])
def test_bad_settings_exit_2_with_a_message(argv, env, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv, env=env)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ferserver: error:") and err.count("\n") == 1, err  # one line, not argparse's usage block first


def test_ports_take_their_whole_range_and_the_off_values():
    c = parse(["--port", "0", "--metrics-port", "-1", "--health-port", "65535", "--grace-s", "0"], env={})
    assert (c.port, c.metrics_port, c.health_port, c.grace_s) == (0, -1, 65535, 0)


def test_concurrency_limit_must_be_positive(capsys):
    assert parse(["--max-concurrent-rpcs", "8"], env={}).max_concurrent_rpcs == 8
    with pytest.raises(SystemExit):
        parse([], env={"FERCODEC_MAX_CONCURRENT_RPCS": "0"})
    assert "--max-concurrent-rpcs" in capsys.readouterr().err


def test_model_dirs_default_to_both_bundled_models_and_take_a_list():
    from ferserver.config import model_cards

    assert [c.kind for c in model_cards(parse([], env={}))] == ["image", "expression"]
    cards = model_cards(parse(["--model-dir", "fercodec-v1-expr, fercodec-v1"], env={}))
    assert [c.model_id.rsplit("-", 1)[0] for c in cards] == ["fercodec-v1-expr", "fercodec-v1"]


def test_max_batch_auto_follows_the_device():
    from ferserver.config import max_batch

    assert max_batch(parse([], env={}), "cpu") == 32
    assert max_batch(parse([], env={}), "cuda") == 256
    assert max_batch(parse(["--max-batch", "8"], env={}), "cuda") == 8


def test_readme_flag_table_is_the_parser():
    """README's ferserver table lists exactly the flags ferserver takes, each with the default the parser has
    (`off` for a flag with none, a number or word in backticks otherwise)."""
    import re

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## The server"):text.index("gRPC API (")]
    rows = {}
    for first, default in re.findall(r"^\| (`--[^|]+) \| ([^|]*) \|", table, re.M):
        for flag in re.findall(r"`(--[a-z0-9-]+)`", first):
            rows[flag] = default.strip()
    fields = {"--" + k.replace("_", "-"): v for k, v in Config().__dict__.items()}
    assert set(rows) == set(fields), (set(rows) ^ set(fields))
    for flag, value in fields.items():
        cell = rows[flag]
        if value is None:
            assert cell.startswith(("off", "the bundled")), (flag, cell)
        elif cell.startswith("`"):
            shown = cell[1:cell.index("`", 1)]
            assert (float(shown) == value) if isinstance(value, (int, float)) else shown == value, (flag, cell, value)
        else:
            assert flag == "--threads" and value == 0 and cell.startswith("torch default"), (flag, cell)


def test_runtime_defaults_leave_an_operators_settings_alone():
    from ferserver.config import GOMP_SPINCOUNT, runtime_defaults

    env: dict[str, str] = {}
    runtime_defaults(env)
    assert env == {"TORCH_CPP_LOG_LEVEL": "ERROR", "GOMP_SPINCOUNT": str(GOMP_SPINCOUNT)}
    env = {"TORCH_CPP_LOG_LEVEL": "WARNING", "GOMP_SPINCOUNT": "50"}
    runtime_defaults(env)
    assert env == {"TORCH_CPP_LOG_LEVEL": "WARNING", "GOMP_SPINCOUNT": "50"}
    env = {"OMP_WAIT_POLICY": "PASSIVE"}  # a wait policy of their own: no spin count imposed on it
    runtime_defaults(env)
    assert "GOMP_SPINCOUNT" not in env


def test_each_message_names_the_setting_it_refuses_and_help_shows_no_default_none(capsys):
    for argv, env, says in ((["--max-wait-ms", "inf"], {}, "--max-wait-ms must be a finite number of milliseconds >= 0, not inf ("),
                            (["--stream-window", "0"], {}, "--stream-window must be 1 or more, not 0"),
                            # one message named three flags, and none where the environment gave the value
                            ([], {"FERCODEC_GRACE_S": "inf"}, "--grace-s must be a number of seconds >= 0, not inf (from $FERCODEC_GRACE_S)"),
                            (["--grace-s=inf"], {"FERCODEC_GRACE_S": "1"}, "--grace-s must be a number of seconds >= 0, not inf (ferserver")):
        with pytest.raises(SystemExit):
            parse(argv, env=env)
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse(["--version"], env={})
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ferserver ")
    with pytest.raises(SystemExit):
        parse(["--help"], env={})
    assert "default None" not in capsys.readouterr().out

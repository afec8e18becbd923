"""ferserver.process.ServerProcess: the child server tests and benchmarks start leaves no log file behind."""

import tempfile

import pytest

from ferserver.process import ServerProcess


def test_log_is_kept_in_memory_and_its_file_removed_once_stopped():
    with ServerProcess("--metrics-port", "-1") as s:
        path = s.log_path
        assert path.exists() and "ferserver ready on" in s.output()
    assert not path.exists()
    assert "ferserver ready on" in s.output() and "stopped" in s.output()


def test_a_server_that_fails_to_start_leaves_no_log_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkstemp puts the log
    with pytest.raises(RuntimeError, match="exited with 2") as e:
        ServerProcess("--max-wait-ms", "nan", attempts=1)
    assert "--max-wait-ms" in str(e.value)
    assert list(tmp_path.iterdir()) == []

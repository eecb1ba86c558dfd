"""The one atomic writer and the one reader of fairseq's JSON log lines."""

import pytest

from admin_fairseq import atomic, fairseq_log


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    atomic.write_json(path, {"status": "finished"})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.replacing(path) as tmp:
            tmp.write_text('{"status": "runn')
            raise RuntimeError("disk full")
    assert path.read_text() == '{\n  "status": "finished"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_writes_create_the_folder_and_count_lines(tmp_path):
    assert atomic.write_lines(tmp_path / "a" / "b.txt", iter(["x", "y", "z"])) == 3
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"x\ny\nz\n"
    atomic.write_text(tmp_path / "c.txt", "\u2019\n")
    assert (tmp_path / "c.txt").read_bytes() == "\u2019\n".encode("utf-8")


def test_fairseq_log_records_and_what_is_not_one():
    lines = [
        '2026-12-01 | INFO | train_inner | {"epoch": 1, "loss": "9.1", "num_updates": "10"}\n',
        '2026-12-01 | INFO | valid | {"valid_loss": "8.5", "valid_num_updates": "10"}\n',
        '2026-12-01 | INFO | train | {"train_loss": "9.0"}\n',
        "2026-12-01 | INFO | fairseq.trainer | begin training epoch 2\n",
        '2026-12-01 | INFO | train_inner | {"epoch": 1, "loss": "9.0", "num_upd\n',  # cut off
    ]
    assert [kind for kind, _ in fairseq_log.records(lines)] == ["train_inner", "valid", "train"]
    assert list(fairseq_log.records(lines, "valid")) == [("valid", {"valid_loss": "8.5", "valid_num_updates": "10"})]
    assert fairseq_log.record(lines[3]) is None and fairseq_log.record(lines[4]) is None

"""xrdflow._fileio: the one atomic-write helper (mode from the umask, old file kept on failure)."""
from __future__ import annotations

import os
import stat

import pytest

from xrdflow import _fileio
from xrdflow._fileio import atomic_output, atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("write", [lambda p: atomic_write_bytes(p, b"abc"),
                                   lambda p: atomic_write_text(p, "abc"),
                                   lambda p: _fileio_cm_write(p)])
def test_new_file_gets_the_umask_mode_not_0600(tmp_path, umask_027, write):
    path = tmp_path / "out.bin"
    write(path)
    assert path.read_bytes() == b"abc"
    assert _mode(path) == umask_027          # 0o666 & ~0o027, as open() would give; mkstemp gives 0o600
    assert os.listdir(tmp_path) == ["out.bin"]


def _fileio_cm_write(path):
    with atomic_output(path) as tmp:
        assert os.path.dirname(tmp) == os.fspath(path.parent)      # the temp file is beside the target
        with open(tmp, "wb") as fh:
            fh.write(b"abc")


def test_replacing_keeps_the_old_files_mode(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(error, match="disk full"):
        with atomic_output(path) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half a new fi")
            raise error("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_failed_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def broken_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(_fileio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_fixed_temp_name_and_make_parents(tmp_path):
    target = tmp_path / "a" / "b" / "m.json"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(target, "{}")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "m.json.tmp-1").write_text("leftover of a killed run")
    with atomic_output(target, temp_name="m.json.tmp-1") as tmp:
        assert os.path.basename(tmp) == "m.json.tmp-1" and os.path.getsize(tmp) == 0
        with open(tmp, "w") as fh:
            fh.write("{}")
    assert target.read_text() == "{}" and os.listdir(target.parent) == ["m.json"]
    atomic_write_bytes(tmp_path / "x" / "y.bin", b"1", make_parents=True)
    assert (tmp_path / "x" / "y.bin").read_bytes() == b"1"


def test_bad_targets(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"")
    with pytest.raises(ValueError, match="empty"):
        atomic_write_bytes("", b"")
    assert os.listdir(tmp_path) == []


def test_old_names_still_importable():
    from xrdflow.plot import atomic_output as plot_atomic_output, check_output_path
    from xrdflow.reflections import fsync_directory
    from xrdflow.train.config import atomic_write_bytes as train_atomic_write_bytes, fsync_dir

    assert plot_atomic_output is atomic_output and check_output_path is _fileio.check_output_path
    assert fsync_dir is fsync_directory is _fileio.fsync_directory
    assert callable(train_atomic_write_bytes)


def test_writers_use_the_umask_mode(tmp_path, umask_027):
    """fit.json and fit.png used to come out 0600 (tempfile.mkstemp)."""
    from xrdflow.fit.report import write_text_atomic
    from xrdflow.train.config import atomic_write_bytes as train_write

    write_text_atomic(tmp_path / "fit.json", "{}\n")
    train_write(tmp_path / "cfg" / "c.yaml", b"a: 1\n")
    assert _mode(tmp_path / "fit.json") == umask_027
    assert _mode(tmp_path / "cfg" / "c.yaml") == umask_027
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from xrdflow.fit.plot import _save_atomic

    _save_atomic(Figure(figsize=(1, 1)), tmp_path / "fit.png", 50)
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _mode(tmp_path / "fit.png") == umask_027
    assert sorted(os.listdir(tmp_path)) == ["cfg", "fit.json", "fit.png"]

"""Disk full and read-only index folders, on real small filesystems (tmpfs)."""

import subprocess
from pathlib import Path

import pytest

from rag import RagError


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of a few MB mounted in tmp; needs the right to mount (root, as in CI here)."""
    mounts = []

    def mount(size_kb: int) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(fs: Path, leave_kb: int) -> None:
    import os

    stat = os.statvfs(fs)
    free = stat.f_bavail * stat.f_frsize
    with (fs / "filler.bin").open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kb * 1024))


def test_disk_full_is_a_clear_error_and_the_old_index_survives(small_fs, make_engine, sample_docs, tmp_path):
    fs = small_fs(4096)
    engine = make_engine(**{"index.path": str(fs / "index")})
    engine.index([sample_docs])
    before = engine.info().version
    for i in range(12):
        (sample_docs / f"extra-{i}.txt").write_text(f"Extra document {i}. " + "Lorem ipsum dolor sit amet. " * 60)
    _fill(fs, leave_kb=24)
    with pytest.raises(RagError, match="disk full while writing the index .* previous version is intact"):
        engine.index([sample_docs])
    (fs / "filler.bin").unlink()
    assert engine.info().version == before
    assert [p.name for p in (fs / "index").iterdir() if p.name.startswith(".staging")] == []
    assert engine.search("How many vacation days?", k=1)[0].doc_id == "handbook.md"
    # With space again, the same run succeeds.
    assert engine.index([sample_docs]).added == 12


def test_read_only_index_folder_is_a_clear_error_and_still_answers(small_fs, make_engine, sample_docs):
    fs = small_fs(8192)
    engine = make_engine(**{"index.path": str(fs / "index")})
    engine.index([sample_docs])
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    (sample_docs / "new.txt").write_text("A new document.")
    with pytest.raises(RagError, match=r"cannot write the index at .*Read-only file system.*previous version is intact"):
        engine.index([sample_docs])
    fresh = make_engine(**{"index.path": str(fs / "index")})
    assert fresh.search("cafeteria closing time", k=1)[0].doc_id == "notes.txt"


def test_disk_full_when_creating_a_new_index_leaves_nothing_behind(small_fs, make_engine, sample_docs):
    fs = small_fs(1024)
    _fill(fs, leave_kb=0)
    engine = make_engine(**{"index.path": str(fs / "new" / "index")})
    with pytest.raises(RagError, match=r"disk full while writing the index at .*; no index was created") as error:
        engine.index([sample_docs])
    assert "previous version" not in str(error.value), "there is no previous version to speak of"
    assert sorted(p.name for p in fs.iterdir()) == ["filler.bin"], "no empty folder or LOCK file is left"

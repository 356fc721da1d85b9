"""Whole output folders written under a temporary name (astro3s.io.atomic_folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from astro3s.io import atomic_folder


def test_a_folder_replaces_the_old_one_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "movie_0"
    final.mkdir()
    (final / "old.txt").write_text("old")
    (tmp_path / ".movie_0.part").mkdir()  # a killed run's leftover
    (tmp_path / ".movie_0.part" / "stale.txt").write_text("stale")
    with pytest.raises(RuntimeError, match="disk full"), atomic_folder(final) as tmp:
        assert tmp.name == ".movie_0.part" and not any(tmp.iterdir())  # the leftover went first
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("disk full")
    # a failure leaves the old folder as it was and no temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie_0"]
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with atomic_folder(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # nothing replaced until the block ends
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["movie_0"]

"""export/contract.py: version directories read the way TF Serving reads them, names kept as found on disk."""
from __future__ import annotations

from pathlib import Path

import pytest

from export.contract import (VersionDir, find_version_dir, latest_version_dir, list_versions, model_names,
                             new_version_dir, next_version, parse_version, version_dirs)

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),  # TF Serving's own test models use zero-padded names
        ("0", 0),  # a version like any other for TF Serving
        ("-1", -1),  # safe_strto64 takes a leading '-'
        ("+1", None),  # ... but not a '+'
        (" 1", 1),  # safe_strto64 skips C whitespace around the digits
        ("1 ", 1),
        ("1a", None),
        ("1.0", None),
        ("", None),
        ("-", None),
        ("\u0661", None),  # an Arabic-Indic digit: str.isdigit() says yes, TF Serving says no
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MAX + 1), None),  # int64 overflow
        (str(-(2**63)), -(2**63)),
        (str(-(2**63) - 1), None),
        (".staging-3-abc", None),
    ],
)
def test_parse_version_follows_tf_serving(name: str, version: int | None) -> None:
    assert parse_version(name) == version


def _dirs(base: Path, *names: str) -> None:
    for name in names:
        (base / name).mkdir(parents=True)


def test_version_dirs_keep_names_and_ignore_other_entries(tmp_path: Path) -> None:
    _dirs(tmp_path, "00000123", "2", "0", "variables", ".staging-4-x", "10")
    (tmp_path / "7").write_text("a file named like a version is not a version")
    found = version_dirs(tmp_path)
    assert [(v.version, v.path.name) for v in found] == [(0, "0"), (2, "2"), (10, "10"), (123, "00000123")]
    assert found[-1].saved_model == tmp_path / "00000123" / "saved_model.pb"
    assert list_versions(tmp_path) == [0, 2, 10, 123]


def test_duplicate_numbers_resolve_like_tf_serving(tmp_path: Path) -> None:
    # TF Serving indexes the sorted names by version, so the last name in order wins: "7" over "007".
    _dirs(tmp_path, "007", "7", "0007")
    assert version_dirs(tmp_path) == [VersionDir(7, tmp_path / "7")]


def test_find_and_latest(tmp_path: Path) -> None:
    _dirs(tmp_path, "1", "00000123")
    assert find_version_dir(tmp_path, 123) == VersionDir(123, tmp_path / "00000123")
    assert find_version_dir(tmp_path, 5) is None
    assert latest_version_dir(tmp_path) == VersionDir(123, tmp_path / "00000123")
    assert latest_version_dir(tmp_path / "missing") is None
    assert version_dirs(tmp_path / "missing") == []


def test_new_versions_are_positive_decimal_names(tmp_path: Path) -> None:
    assert next_version(tmp_path / "missing") == 1
    _dirs(tmp_path / "m", "-3", "0")
    assert next_version(tmp_path / "m") == 1  # export never writes 0 or below, though TF Serving would serve them
    _dirs(tmp_path / "m", "00000041")
    assert next_version(tmp_path / "m") == 42
    assert new_version_dir(tmp_path, "m", 42) == tmp_path / "m" / "42"


def test_model_names_skip_work_in_progress_and_files(tmp_path: Path) -> None:
    _dirs(tmp_path, "b_model", "a_model", ".hidden")
    (tmp_path / "models.config").write_text("")
    assert model_names(tmp_path) == ["a_model", "b_model"]
    assert model_names(tmp_path / "missing") == []

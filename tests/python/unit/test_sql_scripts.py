"""The released scripts the package ships for plain-SQL installs (`pgconductor/sql/`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgconductor.errors import InvalidInput
from pgconductor.schema import install_scripts, update_chain

EXTENSION = Path(__file__).resolve().parents[3] / "extension"


def without_guard(path: Path) -> str:
    """The file's text without its one `\\echo ... \\quit` line."""
    lines = path.read_text().splitlines(keepends=True)
    guards = [i for i, line in enumerate(lines) if line.startswith("\\echo") and "\\quit" in line]
    assert len(guards) == 1, path.name
    return "".join([*lines[: guards[0]], "\n", *lines[guards[0] + 1 :]])


def test_every_released_script_is_shipped_without_its_psql_guard() -> None:
    paths = sorted((EXTENSION / "versions").glob("pgconductor--*.sql"))
    assert len(paths) >= 5
    for path in paths:
        version = path.name.removeprefix("pgconductor--").removesuffix(".sql")
        assert install_scripts(version) == [(version, path.name, without_guard(path))]


def test_the_update_chain_walks_every_script_in_order() -> None:
    chain = update_chain("0.1.0", "0.3.0")
    assert [(version, name) for version, name, _ in chain] == [
        ("0.2.0", "pgconductor--0.1.0--0.2.0.sql"),
        ("0.3.0", "pgconductor--0.2.0--0.3.0.sql"),
    ]
    assert chain[0][2] == without_guard(EXTENSION / "updates" / "pgconductor--0.1.0--0.2.0.sql")
    assert update_chain("0.2.0", "0.2.0") == []


def test_no_path_says_so() -> None:
    with pytest.raises(InvalidInput, match=r"no update path from pgconductor 0\.1\.0 to 0\.1\.5"):
        update_chain("0.1.0", "0.1.5")
    with pytest.raises(InvalidInput, match="no install script") as caught:
        install_scripts("0.0.1")
    assert caught.value.hint is not None
    assert "0.1.0" in caught.value.hint

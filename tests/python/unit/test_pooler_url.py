"""`split_pooler`: the `?pooler=transaction` URL option, taken out before connecting."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from pgconductor.db.runner import split_pooler
from pgconductor.errors import InvalidInput


def test_a_url_without_the_option_is_left_alone() -> None:
    url = make_url("postgresql+psycopg://u@h:6432/db?sslmode=require")
    assert split_pooler(url) == (url, False)


def test_the_option_is_taken_out_and_other_parameters_stay() -> None:
    url = make_url("postgresql+psycopg://u@h:6432/db?pooler=transaction&sslmode=require")
    stripped, pooled = split_pooler(url)
    assert pooled
    assert dict(stripped.query) == {"sslmode": "require"}
    assert stripped.host == "h"
    assert stripped.port == 6432


@pytest.mark.parametrize("mode", ["session", "statement", "Transaction"])
def test_other_modes_are_refused_with_a_hint(mode: str) -> None:
    with pytest.raises(InvalidInput, match=f"unknown pooler mode '{mode}'") as caught:
        split_pooler(make_url(f"postgresql+psycopg://u@h/db?pooler={mode}"))
    assert caught.value.sqlstate == "22023"
    assert caught.value.hint is not None
    assert "?pooler=transaction" in caught.value.hint

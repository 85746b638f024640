from __future__ import annotations

import pytest

from integrations.pymthouse import validate_external_user_id


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "user-123",
        "py-user-001",
        "A.b_c:d-e",
        "0",
        "x" * 128,
        "7f0c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        "tenant:42",
    ],
)
def test_valid_external_user_ids_are_returned_unchanged(value: str) -> None:
    assert validate_external_user_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * 129,
        "someone@example.test",  # emails are never subject keys
        "owner:42",
        "user:42",
        "-leading-dash",
        ".leading-dot",
        ":leading-colon",
        "has space",
        " padded",
        "padded ",
        "trailing-newline\n",
        "slash/inside",
        "percent%2F",
        "ümlaut",
        "１２３",
        "tab\tinside",
    ],
)
def test_invalid_external_user_ids_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        validate_external_user_id(value)


@pytest.mark.parametrize("value", [None, 123, b"abc"])
def test_non_strings_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        validate_external_user_id(value)

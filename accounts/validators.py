from __future__ import annotations

from django.core.exceptions import ValidationError

from integrations.pymthouse import validate_external_user_id as _validate


def validate_external_user_id(value: str) -> None:
    """Django validator wrapping the pymthouse SDK's externalUserId rule."""
    try:
        _validate(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_external_user_id") from exc

"""Decode a /text-to-image body the way go-livepeer's ``json.NewDecoder(r.Body).Decode`` does.

Go semantics emulated (docs/upstream.md §L3): only the first JSON value is read
(trailing bytes are ignored), unknown keys are ignored, keys match exactly or else
case-insensitively (a later duplicate wins), ``null`` leaves a field unset, and a value
of the wrong JSON type is an error naming the Go field. Error texts follow
encoding/json's wording; they are derived from its source, not captured from a run.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

GO_STRUCT = "TextToImageParams"
GO_VALUE_TYPE = "worker.GenTextToImageJSONRequestBody"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Go field types of worker.TextToImageParams (ai/worker/runner.gen.go).
FIELD_TYPES = {
    "guidance_scale": "float32",
    "height": "int",
    "loras": "string",
    "model_id": "string",
    "negative_prompt": "string",
    "num_images_per_prompt": "int",
    "num_inference_steps": "int",
    "prompt": "string",
    "safety_check": "bool",
    "seed": "int",
    "width": "int",
}


class GoDecodeError(ValueError):
    """The message is what go-livepeer puts in ``{"error":{"message":…}}``."""


class _FloatLiteral(str):
    """A JSON number with a fraction or exponent, kept as its source text."""


class _Object(list[tuple[str, Any]]):
    """A JSON object as its ordered (key, value) pairs (duplicates kept, like Go sees them)."""


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | _FloatLiteral):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Object):
        return "object"
    return "array"


def _syntax_error(error: json.JSONDecodeError) -> GoDecodeError:
    if error.pos >= len(error.doc.rstrip()) or error.msg.startswith("Unterminated"):
        return GoDecodeError("unexpected EOF")
    character = error.doc[error.pos]
    if error.msg.startswith("Invalid control character"):
        return GoDecodeError(f"invalid character {character!r} in string literal")
    context = {
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
        "Expecting property name enclosed in double quotes": (
            "looking for beginning of object key string"
        ),
    }.get(error.msg, "looking for beginning of value")
    return GoDecodeError(f"invalid character {character!r} {context}")


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _convert(field: str, go_type: str, value: Any) -> Any:
    def mismatch(kind: str) -> GoDecodeError:
        return GoDecodeError(
            f"json: cannot unmarshal {kind} into Go struct field {GO_STRUCT}.{field} "
            f"of type {go_type}"
        )

    kind = _json_kind(value)
    if go_type == "string":
        if kind != "string" or isinstance(value, _FloatLiteral):
            raise mismatch(kind)
        return str(value)
    if go_type == "bool":
        if kind != "bool":
            raise mismatch(kind)
        return value
    if go_type == "int":
        if isinstance(value, _FloatLiteral) or (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not INT64_MIN <= value <= INT64_MAX
        ):
            raise mismatch(f"number {value}")
        if kind != "number":
            raise mismatch(kind)
        return int(value)
    # float32
    if kind != "number":
        raise mismatch(kind)
    return float(value)


def decode_text_to_image(raw: bytes) -> dict[str, Any]:
    """The fields that were set (non-null), converted to Python values; GoDecodeError otherwise."""
    text = raw.decode("utf-8", "replace")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise GoDecodeError("EOF")
    decoder = json.JSONDecoder(
        parse_float=_FloatLiteral, parse_constant=_reject_constant, object_pairs_hook=_Object
    )
    try:
        document, _end = decoder.raw_decode(stripped)
    except json.JSONDecodeError as error:
        raise _syntax_error(error) from error
    except ValueError as error:  # NaN / Infinity, which Go rejects
        raise GoDecodeError(
            f"invalid character {str(error)[0]!r} looking for beginning of value"
        ) from error
    if document is None:
        return {}  # Go: null into a struct is a no-op
    if not isinstance(document, _Object):
        raise GoDecodeError(
            f"json: cannot unmarshal {_json_kind(document)} into Go value of type {GO_VALUE_TYPE}"
        )
    fields: dict[str, Any] = {}
    for key, value in document:
        field = key if key in FIELD_TYPES else _fold(key)
        if field is None:
            continue
        if value is None:
            if field != "prompt":  # every field but Prompt is a pointer: null resets it
                fields.pop(field, None)
            continue
        fields[field] = _convert(field, FIELD_TYPES[field], value)
    return fields


def _fold(key: str) -> str | None:
    lowered = key.casefold()
    for field in FIELD_TYPES:
        if field.casefold() == lowered:
            return field
    return None

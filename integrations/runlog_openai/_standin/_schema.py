"""A deterministic JSON value for a JSON schema: the stand-in's "structured output".

Covers what ``openai.pydantic_function_tool`` and ``response_format=SomeModel`` send:
objects, arrays, scalars, enums, ``const``, ``anyOf``/``oneOf``/``allOf``, nullable types
and ``$ref`` into ``$defs``. A string is the name of its property, so a test can predict
``{"city": "city", "days": 1}`` without configuring anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 4
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "standin@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def sample(schema: Mapping[str, Any]) -> Any:
    """A value that satisfies ``schema`` (within the features listed above)."""
    return _value(schema, schema, "value", 0)


def _value(schema: Mapping[str, Any], root: Mapping[str, Any], key: str, depth: int) -> Any:
    """The value for one (sub)schema; ``key`` names strings, ``depth`` stops recursion."""
    if depth > 4 * _MAX_DEPTH:
        raise ValueError("the schema recurses without an optional way out")
    if "$ref" in schema:
        return _value(_resolve(root, schema["$ref"]), root, key, depth)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return _value(_choose(schema[combinator], depth), root, key, depth)
    kind = _type_of(schema, depth)
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {name: _value(sub, root, name, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        least = int(schema.get("minItems", 0))
        count = max(1, least) if depth < _MAX_DEPTH else least
        return [_value(schema.get("items", {}), root, key, depth + 1) for _ in range(count)]
    return _scalar(kind, schema, key)


def _scalar(kind: str, schema: Mapping[str, Any], key: str) -> Any:
    """A scalar of JSON type ``kind`` within the schema's simple bounds."""
    if kind == "null":
        return None
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return _number(schema, 1 if kind == "integer" else 1.5)
    text = _FORMATS.get(schema.get("format", ""), key)
    text = text.ljust(int(schema.get("minLength", 0)), "x")
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def _number(schema: Mapping[str, Any], default: float) -> float:
    """``default`` moved inside ``minimum``/``maximum`` (and their exclusive forms)."""
    value = default
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - 1)
    return value


def _type_of(schema: Mapping[str, Any], depth: int) -> str:
    """The JSON type to produce: the first non-null one, or null when nesting is deep."""
    declared = schema.get("type")
    if declared is None:
        return "object" if "properties" in schema else "string"
    if isinstance(declared, str):
        return declared
    kinds = [k for k in declared if k != "null"]
    if not kinds or ("null" in declared and depth >= _MAX_DEPTH):
        return "null"
    return str(kinds[0])


def _choose(options: list[Mapping[str, Any]], depth: int) -> Mapping[str, Any]:
    """The option of an ``anyOf`` to follow: the first non-null one, null when deep."""
    nulls = [o for o in options if o.get("type") == "null"]
    others = [o for o in options if o.get("type") != "null"]
    if nulls and (depth >= _MAX_DEPTH or not others):
        return nulls[0]
    return others[0]


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    """The schema a local ``$ref`` such as ``#/$defs/Item`` points at."""
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if not isinstance(node, Mapping):
        raise ValueError(f"$ref {ref!r} does not point at a schema")
    return node


__all__ = ["sample"]

"""Reading scenario input: the YAML of a file and of ``--set`` overrides, and
one-line messages for what pydantic refuses.

The YAML loader is PyYAML's safe loader with two changes: a key repeated in
one mapping is an error (PyYAML keeps the last one silently), and ``1e-9``
is a float as in YAML 1.2 (YAML 1.1 reads it as text, which strict
validation would then refuse). Every message is one line,
``<file>: <field path>: <problem>; allowed: <what is>``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .._schema import ScenarioError
from ..theory.studies import STUDIES
from .schema import DATA_KINDS

VARIANTS: dict[str, tuple[str, str, dict[str, type[BaseModel]]]] = {
    "data": ("kind", "data kind", DATA_KINDS),
    "infinite_width": ("study", "study", STUDIES),
}
"""Discriminated sections: section → (tag field, what a tag is called, tag → model)."""

_FLOAT_1_2 = re.compile(
    r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$""",
)


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping."""

    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class ScenarioLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing repeated keys and reading ``1e-9`` as a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` merges; its keys may be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


ScenarioLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789"))


def read_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text`` (None when empty); a syntax error or a
    repeated key is a :class:`ScenarioError` naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=ScenarioLoader)  # a subclass of the safe loader
    except DuplicateKeyError as error:
        raise ScenarioError(
            f"{source}: {error.key}: line {error.line}: duplicate key (first given at line {error.first_line}); "
            "allowed: each key once in a mapping"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(
            f"{source}: {where}: YAML syntax error ({problem}); allowed: a YAML mapping of "
            "scenario fields, as in scenarios/quickstart.yaml"
        ) from None


def apply_override(raw: dict, override: str, source: str) -> None:
    """Set the dotted key of ``"key=value"`` in ``raw`` (the value in YAML syntax)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(
            f"{source}: --set {override!r}: not of the form key=value; allowed: e.g. network.width=[64,128]"
        )
    try:
        value = yaml.load(text, Loader=ScenarioLoader)
    except DuplicateKeyError as error:
        raise ScenarioError(
            f"{source}: --set {key}: duplicate key {error.key!r} in the value; allowed: each key once"
        ) from None
    except yaml.YAMLError:
        raise ScenarioError(
            f"{source}: --set {key}: the value {text!r} is not valid YAML; allowed: e.g. 64, [64, 128], tanh"
        ) from None
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            path = ".".join(parts[: depth + 1])
            raise ScenarioError(f"{source}: --set {key}: {path} is not a section; allowed: a field inside a section")
        node = child
    node[parts[-1]] = value


def as_tuples(value: Any) -> Any:
    """YAML lists as tuples (recursively): strict validation takes a tuple
    field from a tuple only, and every list of a scenario is one."""
    if isinstance(value, dict):
        return {key: as_tuples(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(item) for item in value)
    return value


def section_model(root: type[BaseModel], path: Sequence[str], raw: Mapping) -> type[BaseModel] | None:
    """The model of the section at ``path`` below ``root`` (for key suggestions)."""
    if not path:
        return root
    if len(path) == 1 and path[0] in VARIANTS:
        tag, _, models = VARIANTS[path[0]]
        section = raw.get(path[0])
        return models.get(section.get(tag)) if isinstance(section, dict) else None
    if len(path) == 1 and path[0] in root.model_fields:
        annotation = root.model_fields[path[0]].annotation
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return None


def _display_path(loc: Sequence[Any], raw: Any) -> tuple[list[str], str]:
    """Field path of a pydantic error location, without pydantic's internal
    labels (the discriminator tag of ``data`` and ``infinite_width``; a list
    index when the user wrote a single value)."""
    keys: list[str] = []
    text = ""
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part not in node and not last and part in (node.get("kind"), node.get("study")):
            continue  # the discriminated-union tag
        if isinstance(part, int):
            if isinstance(node, (list, tuple)):
                text += f"[{part}]"
                node = node[part] if part < len(node) else None
            continue  # a single value was given: no index to show
        keys.append(str(part))
        text += ("." if text else "") + str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return keys, text or "(top level)"


def _brief(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: ValidationError, raw: Mapping, source: str, root: type[BaseModel]) -> str:
    """One line for the first problem pydantic found validating ``raw`` against ``root``."""
    errors = error.errors()
    first = errors[0]
    keys, path = _display_path(first["loc"], raw)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    got = first.get("input")
    if kind == "extra_forbidden":
        model = section_model(root, keys[:-1], raw)
        allowed = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(keys[-1], allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        variants = VARIANTS.get(".".join(keys[:-1]))
        if variants and not hint:
            _, label, models = variants
            others = [name for name, variant in models.items() if keys[-1] in variant.model_fields]
            suggestion = f"; it belongs to {label} {' and '.join(others)}" if others else ""
        problem = f"unknown key{suggestion} (allowed keys: {', '.join(allowed)})"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_name = str(ctx.get("discriminator", "kind")).strip("'")
        tags = list(STUDIES if tag_name == "study" else DATA_KINDS)
        path = f"{path}.{tag_name}"
        if kind == "union_tag_not_found":
            problem = f"required field is missing; allowed: {', '.join(tags)}"
        else:
            hint = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problem = f"got {ctx.get('tag')!r}, allowed: {', '.join(tags)}{suggestion}"
    elif kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        hint = difflib.get_close_matches(str(got), options, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        problem = f"got {_brief(got)}, allowed: {expected}{suggestion}"
    elif kind == "missing":
        problem = "required field is missing"
        model = section_model(root, keys[:-1], raw)
        if model is not None and keys[-1] in model.model_fields:
            doc = (model.model_fields[keys[-1]].description or "").strip().rstrip(".")
            problem += f" ({doc})" if doc else ""
    else:
        message = first["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "allowed:", 1)
        problem = f"got {_brief(got)}, {message}" if message.startswith("allowed") else f"got {_brief(got)}: {message}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {path}: {problem}{more}"


__all__ = ["ScenarioLoader", "apply_override", "as_tuples", "describe", "read_yaml", "section_model"]

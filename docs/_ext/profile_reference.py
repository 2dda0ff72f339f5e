"""A Sphinx directive that writes the profile file reference from the profile models.

``.. profile-reference::`` walks the JSON Schema that :func:`einfra_spawner.profile_schema`
generates (the very schema published as ``profiles/schema.json``) from ``instance.yaml``
(:class:`~einfra_spawner.models.Instance`) and the profile file (:class:`~einfra_spawner.Profile`)
down to every nested model, and writes one section per model: its docstring, its short form, and
for every key the type, the constraints, the default and an example.

Examples come from the reference instances in ``profiles/`` (the first value found for the key);
keys those files never use take theirs from ``profiles/examples.yaml`` next to the page, each
checked against the model's own validation when the docs are built. A key without any example,
or an example the model refuses, fails the build: the reference cannot fall behind the models.
"""

from __future__ import annotations

import json
import textwrap
from collections import deque
from pathlib import Path
from typing import Any, get_args

import yaml
from docutils import nodes
from docutils.statemachine import StringList
from pydantic import BaseModel, TypeAdapter, ValidationError
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from einfra_spawner import models, pod_settings, profile_schema

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"
ROOTS = (("Instance", "instance.yaml"), ("Profile", "profile files"))


def _model(name: str) -> type[BaseModel]:
    # The pod settings' models live in their own module, below the profile models.
    found = getattr(models, name, None) or getattr(pod_settings, name)
    assert isinstance(found, type) and issubclass(found, BaseModel)
    return found


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The models inside an annotation such as ``tuple[GpuChoice, ...] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(m for m in _nested_models(arg) if m not in found)
    return found


def _is_mapping(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:
        return True
    return any(_is_mapping(arg) for arg in get_args(annotation))


def _collect_examples(model: type[BaseModel], data: Any, found: dict[tuple[str, str], Any]) -> None:
    """Record the first value of every key of ``model`` in ``data`` (a reference file), deeply."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        found.setdefault((model.__name__, key), value)
        for inner in _nested_models(field.annotation):
            if _is_mapping(field.annotation) and isinstance(value, dict):
                items = list(value.values())
            elif isinstance(value, list):
                items = value
            else:
                items = [value]
            for item in items:
                _collect_examples(inner, item, found)


def reference_examples() -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    for path in sorted(PROFILES.glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())
        root = models.Instance if path.name == "instance.yaml" else models.Profile
        _collect_examples(root, data, found)
    return found


def _check_example(model: type[BaseModel], key: str, value: Any) -> None:
    field = model.model_fields[key]
    adapter: TypeAdapter[Any] = TypeAdapter(field.rebuild_annotation())
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        raise ExtensionError(
            f"profile reference: the example of {model.__name__}.{key} is refused: {exc}"
        ) from None


def _yaml_snippet(key: str, value: Any) -> str:
    """``key: value`` in YAML, the innermost collections in flow style as the reference files are."""
    body = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=None, width=90)
    body = body.removesuffix("...\n").rstrip("\n")
    # One line is a value only when it is a scalar or a flow collection, not "key: value".
    one_value = not body.startswith("- ") and not (isinstance(value, dict) and not body.startswith("{"))
    if "\n" not in body and one_value:
        snippet = f"{key}: {body}"
    else:
        snippet = f"{key}:\n" + textwrap.indent(body, "  ")
    if yaml.safe_load(snippet) != {key: value}:
        raise ExtensionError(f"profile reference: the example of {key!r} does not round-trip as YAML")
    return snippet


def _inline_yaml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


class _Writer:
    """Turns the JSON Schema into reStructuredText lines."""

    def __init__(self, schema: dict[str, Any], examples: dict[tuple[str, str], Any]) -> None:
        self.defs: dict[str, Any] = schema["$defs"]
        self.examples = examples
        self.lines: list[str] = []
        self.where: dict[str, list[str]] = {}

    # --- types ---------------------------------------------------------------------------------

    @staticmethod
    def label(name: str) -> str:
        return f"profile-ref-{name.lower()}"

    def describe(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            return f":ref:`{name} <{self.label(name)}>`"
        if "anyOf" in schema:
            parts = [self.describe(s) for s in schema["anyOf"] if s.get("type") != "null"]
            text = " or ".join(dict.fromkeys(parts))
            return text + (", or null" if any(s.get("type") == "null" for s in schema["anyOf"]) else "")
        if "enum" in schema:
            return "one of " + ", ".join(f"``{v}``" for v in schema["enum"])
        if "const" in schema:
            return f"``{schema['const']}``"
        kind = schema.get("type")
        if kind == "array":
            return f"list of {self.describe(schema.get('items', {}))}"
        if kind == "object":
            values = schema.get("additionalProperties")
            patterns = schema.get("patternProperties") or {}
            if patterns:
                ((pattern, values),) = patterns.items()
                return f"mapping of id (matches ``{pattern}``) to {self.describe(values)}"
            value_text = self.describe(values) if isinstance(values, dict) else "any value"
            return f"mapping of string to {value_text}"
        names = {
            "string": "string",
            "integer": "integer",
            "number": "number",
            "boolean": "boolean",
        }
        if kind in names:
            text = names[kind]
            if "pattern" in schema and "Ki|Mi|Gi" in schema["pattern"]:
                return "quantity string (such as ``500m`` or ``8Gi``)"
            return text
        return "any value"

    @staticmethod
    def constraints(schema: dict[str, Any]) -> list[str]:
        found: list[str] = []
        for key, text in (
            ("minimum", "at least {}"),
            ("exclusiveMinimum", "more than {}"),
            ("maximum", "at most {}"),
            ("minLength", "at least {} character(s)"),
            ("maxLength", "at most {} characters"),
            ("minItems", "at least {} items"),
        ):
            if key in schema:
                found.append(text.format(schema[key]))
        if "pattern" in schema and "Ki|Mi|Gi" not in schema["pattern"]:
            found.append(f"matches ``{schema['pattern']}``")
        if "maxLength" in schema.get("propertyNames", {}):
            found.append(f"ids of at most {schema['propertyNames']['maxLength']} characters")
        for inner in schema.get("anyOf", []):
            found.extend(c for c in _Writer.constraints(inner) if c not in found)
        return found

    # --- sections ------------------------------------------------------------------------------

    def definition(self, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The object schema of a model and, if it has one, its scalar short form."""
        entry = self.defs[name]
        if "anyOf" in entry and "properties" not in entry:
            scalar, full = entry["anyOf"]
            return full, scalar
        return entry, None

    def order(self) -> list[str]:
        """Models breadth first from the two roots, each with the key paths where it appears."""
        queue = deque((name, title) for name, title in ROOTS)
        seen: list[str] = []
        while queue:
            name, path = queue.popleft()
            self.where.setdefault(name, []).append(path)
            if name in seen:
                continue
            seen.append(name)
            full, _ = self.definition(name)
            for key, prop in full.get("properties", {}).items():
                for ref in self.refs(prop):
                    base = "" if name in dict(ROOTS) else f"{path}."
                    suffix = "[]" if self.in_list(prop) else ".<id>" if self.in_mapping(prop) else ""
                    queue.append((ref, f"{base}{key}{suffix}"))
        return seen

    def refs(self, schema: Any) -> list[str]:
        if isinstance(schema, dict):
            found = [schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else []
            for value in schema.values():
                found.extend(r for r in self.refs(value) if r not in found)
            return found
        if isinstance(schema, list):
            found = []
            for item in schema:
                found.extend(r for r in self.refs(item) if r not in found)
            return found
        return []

    def in_list(self, schema: dict[str, Any]) -> bool:
        return schema.get("type") == "array" or any(self.in_list(s) for s in schema.get("anyOf", []))

    def in_mapping(self, schema: dict[str, Any]) -> bool:
        return schema.get("type") == "object" or any(self.in_mapping(s) for s in schema.get("anyOf", []))

    def write(self) -> list[str]:
        for name in self.order():
            self.section(name)
        return self.lines

    def section(self, name: str) -> None:
        full, scalar = self.definition(name)
        roots = dict(ROOTS)
        title = f"``{roots[name]}``" if name == "Instance" else roots.get(name, "")
        if not title:
            paths = ", ".join(f"``{p}``" for p in dict.fromkeys(self.where[name]))
            title = f"{name}: {paths}"
        elif name == "Profile":
            title = "Profile files"
        out = self.lines
        out += [f".. _{self.label(name)}:", "", title, "-" * max(len(title), 3), ""]
        doc = (_model(name).__doc__ or "").strip()
        if doc:
            out += [*doc.splitlines(), ""]
        if scalar is not None:
            text = scalar.get("description") or self.describe(scalar)
            out += [f"**Short form:** {text} ({self.describe(scalar)}).", ""]
        required = set(full.get("required", []))
        for key, prop in full.get("properties", {}).items():
            self.key(name, key, prop, required)

    def key(self, model: str, key: str, prop: dict[str, Any], required: set[str]) -> None:
        out = self.lines
        out += [f"``{key}``"]
        if prop.get("description"):
            out.append(f"   - {prop['description']}")
        out.append(f"   - **Type:** {self.describe(prop)}")
        limits = self.constraints(prop)
        if limits:
            out.append(f"   - **Constraints:** {'; '.join(limits)}")
        if key in required:
            out.append("   - **Default:** none: required")
        else:
            out.append(f"   - **Default:** ``{_inline_yaml(prop.get('default'))}``")
        example = self.examples.get((model, key))
        if example is None:
            raise ExtensionError(
                f"profile reference: no example for {model}.{key}; add one to docs/profiles/examples.yaml"
            )
        snippet = _yaml_snippet(key, example)
        out += ["   - **Example:**", "", "     .. code-block:: yaml", ""]
        out += [f"        {line}" for line in snippet.splitlines()]
        out.append("")


class ProfileReference(SphinxDirective):
    """``.. profile-reference::``: every key of instance and profile files, from the models."""

    has_content = False
    option_spec: dict[str, Any] = {}

    def run(self) -> list[nodes.Node]:
        extra_file = Path(self.env.srcdir) / "profiles" / "examples.yaml"
        self.env.note_dependency(str(extra_file))
        for path in PROFILES.glob("*/*.yaml"):
            self.env.note_dependency(str(path))
        examples = reference_examples()
        extra = yaml.safe_load(extra_file.read_text()) or {}
        for dotted, value in extra.items():
            model_name, key = dotted.split(".")
            model = _model(model_name)
            if key not in model.model_fields:
                raise ExtensionError(f"profile reference: {dotted} in examples.yaml is not a key")
            _check_example(model, key, value)
            examples.setdefault((model_name, key), value)
        lines = _Writer(profile_schema(), examples).write()
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="profile-reference"), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("profile-reference", ProfileReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

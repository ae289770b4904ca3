"""Read the config file's YAML strictly, so that what the user wrote is what pvcharge sees.

PyYAML's ``safe_load`` follows YAML 1.1, which has three traps for a config file:

- ``off``, ``on``, ``yes``, ``no`` (any case) are booleans, so ``mode: off`` arrives as ``False``, though
  ``off`` is the documented value. Here only ``true`` and ``false`` (YAML 1.2's core schema) are booleans;
  ``off`` stays the string ``'off'``. A boolean setting still accepts on/off/yes/no (see
  :data:`BOOLEAN_WORDS`), where they mean only one thing.
- A key given twice in one mapping silently takes the last value (``max_current_a: 16`` then
  ``max_current_a: 32`` gives 32). Here it is an error that names both lines.
- A file that is not UTF-8 ends in a ``UnicodeDecodeError``. Here it is an error naming the byte offset.

Every error is a :class:`pvcharge.errors.ConfigError` naming the file (and the key, where there is one).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from pvcharge.errors import ConfigError

#: YAML 1.1 words for a boolean that a boolean setting accepts, lower case (``true``/``false`` are booleans
#: already)
BOOLEAN_WORDS = {"on": True, "yes": True, "off": False, "no": False}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false (any of three spellings), nothing else."""


# SafeLoader's resolvers are a class attribute shared with its subclasses: copy before changing.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml_text(text: str, path: str) -> Any:
    """Parse ``text`` (the content of ``path``) into plain Python objects.

    Raises:
        ConfigError: invalid YAML (with line and column), or a key given twice in one mapping (naming
            the key's path and both lines).
    """
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, "", f"invalid YAML: {where}{problem}") from exc
    if node is None:
        return None
    _check_duplicates(node, "", path)
    loader = _StrictLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:  # e.g. an unhashable key
        raise ConfigError(path, "", f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


def decode_text(data: bytes, path: str) -> str:
    """The config file's bytes as text.

    Raises:
        ConfigError: the file is not UTF-8 (naming the offset of the first bad byte).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            path,
            "",
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (offset {exc.start}); "
            "save the file as UTF-8",
        ) from exc


def _check_duplicates(node: yaml.Node, prefix: str, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            where = f"{prefix}.{key}" if prefix else key
            if key in seen:
                raise ConfigError(
                    path,
                    where,
                    f"given twice, on line {seen[key]} and on line {line}: keep one "
                    "(YAML would silently take the last)",
                )
            seen[key] = line
            _check_duplicates(value_node, where, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicates(item, f"{prefix}[{index}]", path)

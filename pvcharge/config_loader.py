"""The generic config loader: YAML sections into typed settings dataclasses, validated up front.

:mod:`pvcharge.config` knows the file's layout (which sections, which drivers); this module knows how
one section becomes an instance of a settings dataclass whose fields are declared with
:func:`pvcharge.settings.setting`: unknown keys (with a "did you mean" hint), types, ranges with their
units, ``${NAME}`` environment references, ``*_file`` secrets, and the warnings about secrets others may
read.  Every error is a :class:`pvcharge.errors.ConfigError` naming the file and the key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import stat
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pvcharge.errors import ConfigError
from pvcharge.settings import Secret, SettingError
from pvcharge.yamlfile import BOOLEAN_WORDS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def value_kind(value: Any) -> str:
    """What a YAML value is, for error messages: ``"a string"``, ``"nothing (null)"``, …"""
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class ConfigLoader:
    """Reads the sections of one config file into settings dataclasses, collecting what to warn about.

    Args:
        path: the config file, for messages and to resolve relative ``*_file`` paths.
        environ: the environment for ``${NAME}`` references.

    Every method raises :class:`~pvcharge.errors.ConfigError` (``FILE: key.path: problem (expected …)``)
    for a value it cannot take.
    """

    def __init__(self, path: str, environ: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.inline_secrets: list[str] = []  # keys whose secret is written in the config file itself
        self.secret_files: list[tuple[str, Path]] = []

    def warnings(self) -> tuple[str, ...]:
        """A secret in a file that other users may read (mode o+r): one warning per file."""
        found = []
        files = [(key, Path(self.path)) for key in self.inline_secrets[:1]] + self.secret_files
        for key, file in files:
            try:
                mode = file.stat().st_mode
            except OSError:
                continue  # parse_config on text that is not from a file
            if mode & stat.S_IROTH:
                found.append(
                    f"{file} holds a secret ({key}) and is readable by other users "
                    f"(mode {stat.S_IMODE(mode):04o}): chmod o-r {file}, or give the secret as "
                    "<key>_file, ${ENV} or a systemd credential"
                )
        return tuple(found)

    def error(self, key: str, problem: str) -> ConfigError:
        """The error for ``problem`` at ``key`` (a dotted path such as ``loadpoints[1].priority``)."""
        return ConfigError(self.path, key, problem)

    def check_keys(self, data: Mapping[str, Any], prefix: str, allowed: list[str]) -> None:
        """Raises ConfigError for a key of ``data`` not in ``allowed`` (with a "did you mean" hint)."""
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.error(
                    f"{prefix}{key}",
                    f"unknown key{did_you_mean}; expected one of: {', '.join(sorted(allowed))}",
                )

    def dataclass(
        self, cls: type[Any], data: Any, section: str, allowed_extra: list[str] | None = None
    ) -> Any:
        """Section ``data`` (a mapping, or ``None`` for all defaults) at ``section`` as an instance of
        the settings dataclass ``cls`` (fields declared with :func:`pvcharge.settings.setting`);
        ``allowed_extra`` are keys the caller reads itself.  A secret field ``NAME`` may be given as
        ``NAME_file``."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(section, f"expected a mapping, got {value_kind(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        secret_files = {f"{n}_file": n for n in fields if _is_secret(hints[n])}
        self.check_keys(data, f"{section}.", [*fields, *secret_files, *(allowed_extra or [])])
        kwargs: dict[str, Any] = {}
        for key, raw in data.items():
            if key in secret_files:
                name = secret_files[key]
                if name in data:
                    raise self.error(f"{section}.{key}", f"give either '{name}' or '{key}', not both")
                kwargs[name] = Secret(self._read_secret_file(f"{section}.{key}", raw))
            elif key in fields and _is_secret(hints[key]) and raw is not None:
                if not (isinstance(raw, str) and _ENV_REF.fullmatch(raw.strip())):
                    self.inline_secrets.append(f"{section}.{key}")
                kwargs[key] = self.value(f"{section}.{key}", raw, hints[key], fields[key].metadata)
            elif key in fields:
                kwargs[key] = self.value(f"{section}.{key}", raw, hints[key], fields[key].metadata)
        for name, f in fields.items():
            if (
                name not in kwargs
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                doc = f.metadata.get("doc", "")
                raise self.error(f"{section}.{name}", f"missing key ({doc})" if doc else "missing key")
        try:
            return cls(**kwargs)
        except SettingError as exc:
            raise self.error(f"{section}.{exc.key}", exc.problem) from exc

    def _read_secret_file(self, key: str, raw: Any) -> str:
        if not isinstance(raw, str) or not raw:
            raise self.error(key, f"expected a file path, got {value_kind(raw)}")
        file = Path(self.expand(key, raw))
        if not file.is_absolute():
            file = Path(self.path).parent / file
        self.secret_files.append((key, file))
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise self.error(key, f"cannot read secret file {str(file)!r}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise self.error(key, f"secret file {str(file)!r} is not UTF-8 text") from exc

    def expand(self, key: str, text: str) -> str:
        """``text`` with every ``${NAME}`` replaced by the environment variable (unset: ConfigError)."""

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise self.error(key, f"environment variable {name} is not set (referenced as ${{{name}}})")
            return self.environ[name]

        return _ENV_REF.sub(repl, text)

    def value(self, key: str, raw: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
        """The YAML value ``raw`` at ``key`` as settings type ``hint`` (str, bool, int, float, a
        Literal, a Secret, an optional or union of these, a tuple of them or of dataclasses), checked
        against the field's ``meta`` (``min``, ``max``, ``unit``)."""
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if raw is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1:
                return self.value(key, raw, inner[0], meta)
            for option in inner:
                try:
                    return self.value(key, raw, option, meta)
                except ConfigError:
                    continue
            expected = " or ".join(_describe(option, meta) for option in inner)
            raise self.error(key, f"expected {expected}, got {value_kind(raw)} {raw!r}")
        if origin is Literal:
            if isinstance(raw, str):
                raw = self.expand(key, raw)
            for option in args:
                if raw == option and type(raw) is type(option):
                    return option
            expected = ", ".join(repr(a) for a in args)
            raise self.error(key, f"expected one of {expected}, got {raw!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            assert isinstance(args[0], type)
            if not isinstance(raw, list):
                raise self.error(key, f"expected a list (items starting with '- '), got {value_kind(raw)}")
            return tuple(self.dataclass(args[0], item, f"{key}[{i}]") for i, item in enumerate(raw))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(raw, list):
                raise self.error(key, f"expected a list, got {value_kind(raw)}")
            return tuple(self.value(f"{key}[{i}]", item, args[0], meta) for i, item in enumerate(raw))
        if hint is Secret:
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise self.error(key, f"expected a string, got {value_kind(raw)}")
            return Secret(self.expand(key, str(raw)))
        if hint is str:
            if not isinstance(raw, str):
                raise self.error(key, f"expected a string, got {value_kind(raw)}")
            return self.expand(key, raw)
        if hint is bool:
            if isinstance(raw, str) and raw.lower() in BOOLEAN_WORDS:
                return BOOLEAN_WORDS[raw.lower()]
            if not isinstance(raw, bool):
                raise self.error(key, f"expected true or false, got {value_kind(raw)} {raw!r}")
            return raw
        if hint in (int, float):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                unit = f" in {meta['unit']}" if meta.get("unit") else ""
                expected = "an integer" if hint is int else "a number"
                raise self.error(key, f"expected {expected}{unit}, got {value_kind(raw)} {raw!r}")
            if hint is int and not isinstance(raw, int):
                raise self.error(key, f"expected an integer, got {raw!r}")
            value = hint(raw)
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                if lo is not None and hi is not None:
                    bound = f"within {lo:g}–{hi:g}"
                else:
                    bound = f"of at least {lo:g}" if lo is not None else f"of at most {hi:g}"
                unit = f" {meta['unit']}" if meta.get("unit") else ""
                raise self.error(key, f"expected a value {bound}{unit}, got {value:g}")
            return value
        raise TypeError(f"unsupported settings type {hint!r} at {key}")


def _describe(hint: Any, meta: Mapping[str, Any]) -> str:
    """What a value of settings type ``hint`` looks like, for error messages."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint in (int, float):
        unit = f" in {meta['unit']}" if meta.get("unit") else ""
        return ("an integer" if hint is int else "a number") + unit
    return {str: "a string", bool: "true or false"}.get(hint, str(hint))


def _is_secret(hint: Any) -> bool:
    return hint is Secret or Secret in typing.get_args(hint)

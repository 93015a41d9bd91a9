"""Settings as text: each field of a settings dataclass read from a flag or a variable.

`--max-queue-delay-ms 7.5` and `SEGMENTATION_MAX_QUEUE_DELAY_MS=7.5` are two spellings of one
field; the flag wins, then the variable, then the field's default. The field's type says how
its text reads, the same for both spellings: `bool` as true/false, 1/0, yes/no or on/off
(configparser's spellings; a bare flag means true), `tuple[X, ...]` as comma-separated Xs in
the order given, a `Literal` as one of its values in any case (argparse's `choices`). Each
flag's help is the field's `help` metadata with its variable and default. Checking the values
is the dataclass's job, not this module's.
"""

from __future__ import annotations

import argparse
import configparser
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import MISSING, Field, fields
from typing import Any, Literal, NoReturn, get_args, get_origin, get_type_hints

Reader = Callable[[str], Any]


class SettingError(ValueError):
    """A value the setting `name` refuses; the message names the setting and the value."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def read_bool(text: str) -> bool:
    try:
        return configparser.ConfigParser.BOOLEAN_STATES[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"expected true or false (or 1/0, yes/no, on/off); was {text!r}"
        ) from None


def reader(kind: Any) -> Reader:
    """How the text of a field of type `kind` (resolved by `get_type_hints`) reads."""
    if kind is bool:
        return read_bool
    if kind in (int, float):
        return _number(kind)
    if kind is str:
        return str
    if get_origin(kind) is Literal:
        return _choice(get_args(kind))
    if get_origin(kind) is tuple and get_args(kind)[1:] == (Ellipsis,):
        return _items(reader(get_args(kind)[0]))
    raise TypeError(f"no reader for settings of type {kind}")


def _number(kind: type[int] | type[float]) -> Reader:
    expected = "an integer" if kind is int else "a number"

    def read(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; was {text!r}") from None

    return read


def _choice(choices: tuple[str, ...]) -> Reader:
    spelled = {choice.lower(): choice for choice in choices}

    def read(text: str) -> str:
        # Text that is no choice stays as it is, for `choices` to refuse with the list.
        return spelled.get(text.strip().lower(), text)

    return read


def _items(read_item: Reader) -> Reader:
    def read(text: str) -> tuple[Any, ...]:
        return tuple(read_item(part.strip()) for part in text.split(",") if part.strip())

    return read


def default_of(setting: Field[Any]) -> Any:
    if setting.default_factory is not MISSING:
        return setting.default_factory()
    return setting.default


def as_text(value: Any) -> str:
    """A value as one would spell it in a flag or a variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value) if value != "" else "empty"


class SettingsParser:
    """The fields of the dataclass `settings` as flags with `env_prefix` variables."""

    def __init__(self, settings: type, *, env_prefix: str, prog: str, description: str) -> None:
        self._settings = settings
        self._env_prefix = env_prefix
        self._readers: dict[str, Reader] = {}
        self._parser = argparse.ArgumentParser(
            prog=prog,
            description=description,
            epilog=f"Every flag also reads {env_prefix}<FLAG_NAME> from the environment; "
            "the flag wins.",
        )
        types = get_type_hints(settings)
        for setting in fields(settings):
            kind = types[setting.name]
            choices = get_args(kind) if get_origin(kind) is Literal else None
            self._readers[setting.name] = reader(kind)
            self._parser.add_argument(
                self.flag(setting.name),
                dest=setting.name,
                type=self._readers[setting.name],
                choices=choices,
                default=argparse.SUPPRESS,  # absent unless given: then the variable, the default
                help=f"{setting.metadata['help']} (env {self.env_name(setting.name)}; "
                f"default {as_text(default_of(setting))})",
                metavar=None if choices else setting.name.upper(),
                nargs="?" if kind is bool else None,  # a bare `--fetch-models-only` means true
                const=True if kind is bool else None,
            )

    @staticmethod
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    def env_name(self, name: str) -> str:
        return self._env_prefix + name.upper()

    def format_help(self) -> str:
        return self._parser.format_help()

    def parse(self, argv: Sequence[str] | None, environ: Mapping[str, str]) -> dict[str, Any]:
        """The values given, by field name: each from its flag, else from its variable. Text
        that does not read as its field's type stops the program with a usage error."""
        values = vars(self._parser.parse_args(argv))
        try:
            return {**self.read_environment(environ, skip=values), **values}
        except SettingError as error:
            self._parser.error(f"{self.env_name(error.name)}: {error}")

    def read_environment(
        self, environ: Mapping[str, str], skip: Collection[str] = ()
    ) -> dict[str, Any]:
        """The values the variables give, by field name, except the fields in `skip`; text
        that does not read as its field's type raises `SettingError`."""
        values = {}
        for name, read in self._readers.items():
            text = environ.get(self.env_name(name))
            if name in skip or text is None:
                continue
            try:
                values[name] = read(text)
            except argparse.ArgumentTypeError as error:
                raise SettingError(name, str(error)) from None
        return values

    def refuse(self, name: str, message: str) -> NoReturn:
        """Stops the program with a usage error about the field `name`, in both spellings."""
        self._parser.error(f"{self.flag(name)} / {self.env_name(name)}: {message}")

"""strongSwan's swanctl.conf, read into aioipsec's configuration model.

The file uses strongSwan's *settings* syntax (the same as strongswan.conf):

* ``name { ... }`` sections, nested; a section named twice is merged;
* ``key = value``: the value runs to the end of the line (or to ``#`` or ``}``); parts
  separated by blanks are joined by one space; ``"quoted strings"`` may hold ``#``,
  ``}``, escapes (``\\n``, ``\\t``, ``\\"``) and continue over an escaped newline;
  ``key =`` with nothing after it leaves the key unset;
* ``# comments``;
* ``include PATTERN``: files matching the glob, relative to the including file, sorted,
  parsed in place (inside the current section);
* ``name : other.section, ... { ... }``: a section based on others (templates): settings
  and subsections of the referenced sections apply unless the section sets them itself.

This module parses that syntax into a tree (:func:`parse_settings_file`), with the file
and line of every section and key, then hands the tree to the same validator as the TOML
loader (:func:`load_swanctl`, called by ``aioipsec.config.load_configuration``).
Credentials sit where swanctl keeps them: ``certs`` are looked up in ``x509/``,
``cacerts`` in ``x509ca/``, private key files in ``private/`` (or ``rsa/``, ``ecdsa/``,
``pkcs8/``) next to swanctl.conf; like ``swanctl --load-all``, every key in those key
folders and every CA certificate in ``x509ca/`` is loaded.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.config.build import (
    RawSource,
    add_pkcs12,
    build_configuration,
    named_key_files,
)
from aioipsec.config.credentials import (
    SWANCTL_FOLDERS,
    check_secret_file_modes,
    load_certificate,
    load_crl_file,
    load_private_key,
    load_public_key,
)
from aioipsec.config.model import ConfigError, Configuration, PrivateKey, raise_collected

__all__ = [
    "Section",
    "Setting",
    "load_swanctl",
    "parse_settings_file",
    "parse_settings_text",
    "section_to_data",
]

_NAME_STOP = set('#{}:.,="\r\n\t ')
_VALUE_STOP = set('#}"\r\n\t ')
_INCLUDE_STOP = set('"\\#}\r\n\t ')
_MAX_INCLUDE_DEPTH = 10
# strongSwan's own files nest four or five levels; 64 keeps Python's recursion far away.
_MAX_SECTION_DEPTH = 64


@dataclass
class Setting:
    value: str | None
    file: str
    line: int


@dataclass
class Section:
    name: str
    file: str
    line: int
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    # On the root: every section path another section is based on (templates).
    bases: set[str] = field(default_factory=set)

    def merge(self, other: Section) -> None:
        """Fold ``other`` (a later definition of the same section) into this one."""
        self.settings.update(other.settings)
        self.references.extend(r for r in other.references if r not in self.references)
        for name, section in other.sections.items():
            if name in self.sections:
                self.sections[name].merge(section)
            else:
                self.sections[name] = section


class _Scanner:
    """strongSwan's settings lexer, one file; the states (main, ref, val, inc, str)
    are methods. Line numbers count the newlines consumed so far."""

    def __init__(self, text: str, file: str, included: bool = False) -> None:
        self.included = included
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1
        # Until one statement has parsed, the file may be anything (an include of
        # /etc/shadow): its text is then never quoted in an error.
        self.statements = 0

    def error(self, reason: str, line: int | None = None) -> ConfigError:
        if self.included and not self.statements:
            return ConfigError(
                "not in swanctl.conf syntax (its content is not shown: is this a "
                "configuration file?)",
                file=self.file,
                line=line or self.line,
                hint="include only swanctl.conf files",
            )
        return ConfigError(reason, file=self.file, line=line or self.line)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self) -> str:
        char = self.text[self.pos]
        self.pos += 1
        if char == "\n":
            self.line += 1
        return char

    def skip_blank(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            elif char == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                return

    def name(self, allow_dots: bool = False) -> str:
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _NAME_STOP and not (allow_dots and char == "."):
                break
            self.pos += 1
        return self.text[start : self.pos]

    def at_include(self) -> bool:
        """``include`` followed by blanks and then not ``=`` (then it is a key)."""
        if not self.text.startswith("include", self.pos):
            return False
        rest = self.pos + len("include")
        if rest >= len(self.text) or self.text[rest] not in " \t":
            return False
        while rest < len(self.text) and self.text[rest] in " \t":
            rest += 1
        return rest < len(self.text) and self.text[rest] != "="

    def quoted(self) -> str:
        """After an opening quote: the string up to the closing one."""
        start_line = self.line
        parts: list[str] = []
        escapes = {"n": "\n", "r": "\r", "t": "\t"}
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated string", start_line)
            char = self.advance()
            if char == '"':
                return "".join(parts)
            if char == "\r":
                continue
            if char == "\\":
                if self.pos >= len(self.text):
                    raise self.error("unterminated string", start_line)
                escaped = self.advance()
                if escaped == "\r" and self.peek() == "\n":
                    self.advance()
                    continue
                if escaped == "\n":
                    continue  # an escaped newline joins the lines
                parts.append(escapes.get(escaped, escaped))
                continue
            parts.append(char)

    def value(self) -> str | None:
        """After ``=``: parts up to the end of the line, ``#`` or ``}``, joined by a space."""
        parts: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char in "\n#}":
                break
            elif char == '"':
                self.advance()
                parts.append(self.quoted())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] not in _VALUE_STOP:
                    self.pos += 1
                parts.append(self.text[start : self.pos])
        return " ".join(parts) if parts else None

    def include_pattern(self) -> str:
        """After ``include``: a pattern (``\\`` escapes blanks, ``#``, ``}``, quotes) or a
        quoted string."""
        while self.peek() in (" ", "\t"):
            self.pos += 1
        if self.peek() == '"':
            self.advance()
            return self.quoted()
        parts: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if (
                char == "\\"
                and self.pos + 1 < len(self.text)
                and self.text[self.pos + 1] in ('"#} ')
            ):
                parts.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == "\\":
                parts.append(char)
                self.pos += 1
            elif char in _INCLUDE_STOP:
                break
            else:
                parts.append(char)
                self.pos += 1
        return "".join(parts)


class _Parser:
    def __init__(self) -> None:
        self.files: list[str] = []

    def parse_file(self, path: Path, into: Section, depth: int = 0) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read the file: {error.strerror}", file=path) from None
        except UnicodeDecodeError:
            raise ConfigError("the file is not UTF-8 text", file=path) from None
        self.files.append(str(path))
        self.parse_text(text, str(path), into, depth)

    def parse_text(self, text: str, file: str, into: Section, depth: int = 0) -> None:
        scanner = _Scanner(text, file, included=depth > 0)
        self._statements(scanner, into, depth, top=True)

    def _statements(
        self, scanner: _Scanner, section: Section, depth: int, top: bool, level: int = 0
    ) -> None:
        if level > _MAX_SECTION_DEPTH:
            raise scanner.error(
                f"sections nested deeper than {_MAX_SECTION_DEPTH} levels",
            )
        while True:
            scanner.skip_blank()
            char = scanner.peek()
            if not char:
                if not top:
                    raise scanner.error(
                        f"section {section.name!r} (line {section.line}) is not closed: "
                        "missing '}'"
                    )
                return
            if char == "}":
                if top:
                    raise scanner.error("unexpected '}' (no section to close)")
                scanner.advance()
                return
            if scanner.at_include():
                line = scanner.line
                scanner.pos += len("include")
                pattern = scanner.include_pattern()
                self._include(scanner, pattern, section, depth, line)
                scanner.statements += 1
                continue
            if char == '"':
                raise scanner.error("unexpected string: quotes are allowed only in values")
            if char in _NAME_STOP:
                raise scanner.error(f"syntax error: unexpected {char!r}")
            line = scanner.line
            name = scanner.name()
            scanner.skip_blank(newlines=True)
            follow = scanner.peek()
            if follow == "=":
                scanner.advance()
                value = scanner.value()
                section.settings[name] = Setting(value=value, file=scanner.file, line=line)
                scanner.statements += 1
            elif follow in ("{", ":"):
                child = Section(name=name, file=scanner.file, line=line)
                if follow == ":":
                    scanner.advance()
                    child.references = self._references(scanner)
                    if scanner.peek() != "{":
                        raise scanner.error(f"expected '{{' after the references of {name!r}")
                scanner.advance()
                scanner.statements += 1
                self._statements(scanner, child, depth, top=False, level=level + 1)
                if name in section.sections:
                    section.sections[name].merge(child)
                else:
                    section.sections[name] = child
            elif follow == ".":
                raise scanner.error(f"{name}.…: dots are not allowed in names here", line)
            else:
                what = repr(follow) if follow else "end of file"
                raise scanner.error(
                    f"expected '=' or '{{' after {name!r}, found {what} "
                    "(a value runs to the end of the line: one setting per line)",
                    line,
                )

    def _references(self, scanner: _Scanner) -> list[str]:
        references: list[str] = []
        while True:
            scanner.skip_blank()
            name = scanner.name(allow_dots=True)
            if not name:
                raise scanner.error("expected the name of a section to base this one on")
            references.append(name)
            scanner.skip_blank()
            if scanner.peek() != ",":
                return references
            scanner.advance()

    def _include(
        self, scanner: _Scanner, pattern: str, section: Section, depth: int, line: int
    ) -> None:
        if depth >= _MAX_INCLUDE_DEPTH:
            raise ConfigError(
                f"includes nested deeper than {_MAX_INCLUDE_DEPTH}", file=scanner.file, line=line
            )
        if not pattern:
            raise ConfigError("include without a file pattern", file=scanner.file, line=line)
        base = Path(scanner.file).parent if scanner.file != "<string>" else Path.cwd()
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matches = sorted(glob.glob(full))
        if not matches and not glob.has_magic(pattern):
            raise ConfigError(
                f"include {pattern!r}: {full} does not exist", file=scanner.file, line=line
            )
        for match in matches:
            if Path(match).is_file():
                self.parse_file(Path(match), section, depth + 1)


def parse_settings_file(path: str | os.PathLike[str]) -> Section:
    """Parse a file in strongSwan's settings syntax into a tree (references resolved)."""
    root = Section(name="", file=str(path), line=0)
    _Parser().parse_file(Path(path), root)
    _resolve_references(root, root)
    return root


def parse_settings_text(text: str, file: str = "<string>") -> Section:
    root = Section(name="", file=file, line=0)
    _Parser().parse_text(text, file, root)
    _resolve_references(root, root)
    return root


def _lookup(root: Section, dotted: str) -> Section | None:
    section = root
    for part in dotted.split("."):
        if part not in section.sections:
            return None
        section = section.sections[part]
    return section


def _resolve_references(root: Section, section: Section, active: tuple[int, ...] = ()) -> None:
    """Copy what a ``name : base`` section inherits into it (its own keys win)."""
    if id(section) in active:
        raise ConfigError(f"section {section.name!r} is based on itself", file=section.file,
                          line=section.line)  # fmt: skip
    active = (*active, id(section))
    for reference in section.references:
        base = _lookup(root, reference)
        if base is None:
            raise ConfigError(
                f"section {section.name!r} is based on {reference!r}, which does not exist",
                file=section.file,
                line=section.line,
                hint="name the base section by its full path, e.g. connections.base",
            )
        root.bases.add(reference)
        _resolve_references(root, base, active)
        _inherit(section, base)
    section.references = []
    for child in section.sections.values():
        _resolve_references(root, child, active)


def _inherit(section: Section, base: Section) -> None:
    for key, setting in base.settings.items():
        section.settings.setdefault(key, setting)
    for name, base_child in base.sections.items():
        if name not in section.sections:
            section.sections[name] = Section(name=name, file=base_child.file,
                                             line=base_child.line)  # fmt: skip
        _inherit(section.sections[name], base_child)


def section_to_data(
    section: Section,
) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[str, int]]]:
    """The tree as nested dicts of strings, and the (file, line) of every key path."""
    locations: dict[tuple[str, ...], tuple[str, int]] = {}

    def walk(node: Section, path: tuple[str, ...]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, setting in node.settings.items():
            data[key] = setting.value
            locations[(*path, key)] = (setting.file, setting.line)
        for name, child in node.sections.items():
            locations[(*path, name)] = (child.file, child.line)
            data[name] = walk(child, (*path, name))
        return data

    return walk(section, ()), locations


def _auto_credentials(
    base: Path,
    configuration: Configuration,
    source: RawSource,
    named: set[Path],
) -> None:
    """What ``swanctl --load-creds`` loads without being told: every private key in
    private/, rsa/, ecdsa/, pkcs8/ (one a ``secrets`` entry names, with its passphrase,
    is loaded there), every certificate in x509/ and CA certificate in x509ca/."""
    known = {p.file.resolve() for p in configuration.private_keys} | named
    for kind in ("private", "rsa", "ecdsa", "pkcs8", "pkcs12"):
        folder = base / SWANCTL_FOLDERS[kind]
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.resolve() in known:
                continue
            with source.collecting():
                try:
                    if kind == "pkcs12":
                        key = add_pkcs12(configuration, path, None)
                    else:
                        key = load_private_key(path)
                except ConfigError as error:
                    raise ConfigError(
                        error.reason + " (swanctl loads every key in this folder)",
                        file=path,
                        key=f"secrets ({kind}/{path.name})",
                        hint=error.hint,
                    ) from None
                configuration.private_keys.append(
                    PrivateKey(name=f"{kind}/{path.name}", file=path, key=key, source=source.path)
                )
    _revocation_files(base, configuration, source)
    for kind, target in (("cacerts", configuration.authorities),
                         ("certs", configuration.certificates)):  # fmt: skip
        folder = base / SWANCTL_FOLDERS[kind]
        if folder.is_dir():
            target.extend(
                path for path in sorted(folder.iterdir()) if path.is_file() and path not in target
            )


def _revocation_files(base: Path, configuration: Configuration, source: RawSource) -> None:
    """swanctl's x509crl/ (CRLs, checked against the peer's chain), x509ocsp/ (OCSP
    signer certificates, both used by aioipsec/revocation.py) and pubkey/ (raw public
    keys, trusted for the peer whose KEY_ID they are, as strongSwan's CERT_TRUSTED_PUBKEY):
    read now so that a broken file is named at load."""
    loaders = {"x509crl": load_crl_file, "x509ocsp": load_certificate, "pubkey": load_public_key}
    for folder_name, target in (("x509crl", configuration.crls),
                                ("x509ocsp", configuration.ocsp_signers),
                                ("pubkey", configuration.public_keys)):  # fmt: skip
        folder = base / folder_name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path in target:
                continue
            with source.collecting():
                try:
                    loaders[folder_name](path)
                except ConfigError as error:
                    raise ConfigError(
                        error.reason + f" (swanctl loads every file in {folder_name}/)",
                        file=path,
                        key=f"{folder_name}/{path.name}",
                        hint=error.hint,
                    ) from None
                target.append(path)


def load_swanctl(
    path: str | os.PathLike[str], configuration: Configuration | None = None
) -> Configuration:
    """Read strongSwan's swanctl.conf (and its includes, keys and certificates).

    Every problem found is reported at once (:class:`ConfigErrors` for several)."""
    path = Path(path)
    tree = parse_settings_file(path)
    data, locations = section_to_data(tree)

    def locate(key_path: tuple[str, ...]) -> tuple[str, int | None]:
        for length in range(len(key_path), 0, -1):
            if key_path[:length] in locations:
                return locations[key_path[:length]]
        return str(path), None

    configuration = configuration or Configuration()
    source = RawSource(
        path=str(path),
        data=data,
        locate=locate,
        kind="swanctl",
        allow_weak=tuple(configuration.daemon.allow_weak_algorithms),
        templates=frozenset(base for base in tree.bases if "." not in base),
    )
    # The keys named in `secrets` first (with their passphrases), then the rest of the
    # key folders, which may need a passphrase given there too; then connections, whose
    # credentials are checked once everything is loaded.
    build_configuration(source, configuration, finish=False)
    _auto_credentials(path.resolve().parent, configuration, source, named_key_files(source))
    check_secret_file_modes(source.secret_files, configuration, source.problems)
    raise_collected(source.problems)
    return configuration

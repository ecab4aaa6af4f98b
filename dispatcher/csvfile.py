"""Reading the tenants a CSV file lists, as ``tenantctl import`` does.

Usage::

    listed = read_tenants(Path("tenants.csv"), registry.rules)
    for error in listed.errors:
        print(error)  # tenants.csv:4: slug 'Bad_Slug' must be ...
    results = registry.import_tenants(row.spec for row in listed.rows)

The file is UTF-8 (a byte-order mark is allowed) with a header row naming
its columns, from :data:`COLUMNS`; ``slug`` and ``owner_email`` are required.
``domains`` holds host names separated by spaces, the first primary;
``config`` a JSON object; ``data_server`` the named server to hold the
tenant's data (empty: none named, placement decides). A row without values
is skipped, like a blank line. A row that gives the tenant no address (no
``subdomain``, ``path_prefix`` nor ``domains``) gets the subdomain named
after its slug, as ``tenantctl add`` gives it: a tenant nobody can reach is
never what a file meant. With no base domain (no subdomains routed) the row
is taken as it is.

Pure: it reads the file and checks each row by the registry's rules, but
writes nothing and prints nothing. A file that cannot be read as a list of
tenants raises :class:`BadFile`, and none of it is used. A bad row (a name
that breaks a rule, more custom domains than the rules allow, a config that
is not a JSON object, a slug already on an earlier line) becomes a
:class:`RowError` naming the file, its line and the rule, and the other rows
are still read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dispatcher.configtext import parse_config
from dispatcher.exceptions import TooManyDomains
from dispatcher.rules import TenantRules
from dispatcher.tenant import NewTenant

__all__ = ["COLUMNS", "BadFile", "Row", "RowError", "TenantFile", "read_tenants"]

#: The columns a file may have, in the order ``tenantctl import --help`` lists them.
COLUMNS = (
    "slug",
    "owner_email",
    "owner_name",
    "subdomain",
    "path_prefix",
    "domains",
    "config",
    "data_server",
)
_REQUIRED = frozenset({"slug", "owner_email"})


class BadFile(ValueError):
    """The file cannot be read as a list of tenants; none of it was used."""


@dataclass(frozen=True, slots=True)
class Row:
    """A tenant the file asks for, and the line its row ends on."""

    line: int
    spec: NewTenant


@dataclass(frozen=True, slots=True)
class RowError:
    """Why the row ending on ``line`` of ``file`` was not used or not written."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class TenantFile:
    """What a file lists: its good rows and its bad ones, each in file order."""

    file: Path
    rows: tuple[Row, ...]
    errors: tuple[RowError, ...]


def read_tenants(
    file: Path, rules: TenantRules, stream: TextIO | None = None
) -> TenantFile:
    """The tenants ``file`` lists, checked by ``rules``; raises :class:`BadFile`.

    ``stream``: read it instead (standard input, say), with ``file`` the name
    its errors give; opened with ``newline=""``, as :mod:`csv` needs.
    """
    rows: list[Row] = []
    errors: list[RowError] = []
    first_line: dict[str, int] = {}
    for line, fields in _read(file, stream):
        try:
            spec = _tenant(fields, rules)
        # TooManyDomains is a Conflict, not a ValueError, but here it is a row
        # the file got wrong like any other.
        except (ValueError, TooManyDomains) as e:
            errors.append(RowError(file, line, str(e)))
            continue
        if spec.slug in first_line:
            message = f"tenant {spec.slug!r} is already on line {first_line[spec.slug]}"
            errors.append(RowError(file, line, message))
            continue
        first_line[spec.slug] = line
        rows.append(Row(line, spec))
    return TenantFile(file, tuple(rows), tuple(errors))


def _read(file: Path, stream: TextIO | None) -> list[tuple[int, dict[str, Any]]]:
    """Every row with a value, and the line it ends on; the whole file is read
    first, so that a file that turns out bad is not partly used."""
    try:
        if stream is not None:
            return _read_stream(file, stream)
        with file.open(newline="", encoding="utf-8-sig") as opened:
            return _read_stream(file, opened)
    except UnicodeDecodeError as e:
        raise BadFile(f"{file} is not UTF-8 text: {e}") from e
    except csv.Error as e:
        raise BadFile(f"{file} is not valid CSV: {e}") from e


def _read_stream(file: Path, stream: TextIO) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(stream)
    _check_header(file, list(reader.fieldnames or []))
    return [(reader.line_num, row) for row in _rows(reader)]


def _check_header(file: Path, columns: list[str]) -> None:
    # DictReader keeps the last of two same-named fields: refuse, or a row
    # would be read other than it looks.
    twice = sorted({name for name in columns if columns.count(name) > 1})
    if twice:
        raise BadFile(
            f"{file}: the header row names column(s) "
            f"{', '.join(map(repr, twice))} more than once"
        )
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise BadFile(
            f"{file}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"use {', '.join(COLUMNS)}"
        )
    missing = _REQUIRED - set(columns)
    if missing:
        raise BadFile(
            f"{file}: the header row must name the column(s) "
            f"{', '.join(sorted(missing))}"
        )


def _rows(reader: csv.DictReader[str]) -> Iterator[dict[str, Any]]:
    for row in reader:
        if any(value for value in row.values() if isinstance(value, str)):
            yield row


def _tenant(row: dict[str, Any], rules: TenantRules) -> NewTenant:
    # DictReader files the fields past the header's under the key None.
    if None in row:
        raise ValueError("the row has more fields than the header")
    slug = row.get("slug") or ""
    subdomain = row.get("subdomain") or None
    path_prefix = row.get("path_prefix") or None
    domains = (row.get("domains") or "").split()
    if not (subdomain or path_prefix or domains) and rules.base_domain is not None:
        subdomain = slug
    return rules.new_tenant(
        slug,
        owner_email=row.get("owner_email") or "",
        owner_name=row.get("owner_name") or None,
        subdomain=subdomain,
        path_prefix=path_prefix,
        domains=domains,
        config=parse_config(row.get("config") or ""),
        data_server=row.get("data_server") or None,
    )

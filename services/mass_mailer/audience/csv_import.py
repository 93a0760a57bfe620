"""CSV contact import: decoding (UTF-8 or Windows-1252) and per-row validation (pure)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.contracts.base import _valid_address

MAX_ROWS = 100_000
KNOWN_COLUMNS = {"contact_id", "email", "first_name", "last_name", "language", "email_opt_out"}
TRUE = {"1", "true", "yes", "y", "ja", "x"}
FALSE = {"", "0", "false", "no", "n", "nein"}


class CsvError(ValueError):
    """The file as a whole cannot be imported (clear reason)."""


@dataclass
class RowError:
    row: int  # line number in the file, header = 1
    error: str


@dataclass
class ParsedCsv:
    encoding: str
    contacts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def decode(data: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-8 (with or without BOM) when valid, else Windows-1252."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError as exc:
        raise CsvError("the file is neither UTF-8 nor Windows-1252 text") from exc


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"email_opt_out must be yes/no, got {value[:20]!r}")


def _row(raw: dict[str, str], custom_columns: list[str]) -> dict[str, Any]:
    contact_id = (raw.get("contact_id") or "").strip()
    if not contact_id or len(contact_id) > 100:
        raise ValueError("contact_id is required (at most 100 characters)")
    email = (raw.get("email") or "").strip() or None
    if email is not None:
        try:
            email = _valid_address(email).lower()
        except ValueError as exc:
            raise ValueError(f"email {email[:80]!r} is not valid") from exc
    values: dict[str, Any] = {"contact_id": contact_id, "email": email}
    for name, limit in (("first_name", 500), ("last_name", 500), ("language", 35)):
        value = (raw.get(name) or "").strip()
        if len(value) > limit:
            raise ValueError(f"{name} longer than {limit} characters")
        if any(ord(c) < 32 for c in value):
            raise ValueError(f"{name} contains control characters")
        values[name] = value or None
    values["email_opt_out"] = _flag(raw.get("email_opt_out") or "")
    values["custom_fields"] = {c: raw[c] for c in custom_columns if (raw.get(c) or "") != ""}
    return values


def parse(data: bytes, *, delimiter: str | None = None) -> ParsedCsv:
    """Contacts from a CSV with a header row; every bad row is reported, good rows are kept."""
    text, encoding = decode(data)
    if not text.strip():
        raise CsvError("the file is empty")
    dialect_delimiter = delimiter
    if dialect_delimiter is None:
        first = text.splitlines()[0]
        dialect_delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=dialect_delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "contact_id" not in header:
        raise CsvError("the header row must have a contact_id column")
    reader.fieldnames = header
    custom = [h for h in header if h and h not in KNOWN_COLUMNS]
    result = ParsedCsv(encoding=encoding)
    seen: set[str] = set()
    try:
        for raw in reader:
            line = reader.line_num
            if len(result.contacts) + len(result.errors) >= MAX_ROWS:
                raise CsvError(f"more than {MAX_ROWS} rows; split the file")
            if None in raw:
                result.errors.append(RowError(line, "more fields than the header has"))
                continue
            try:
                row = _row(raw, custom)
            except (ValueError, ValidationError) as exc:
                result.errors.append(RowError(line, str(exc)))
                continue
            if row["contact_id"] in seen:
                result.errors.append(RowError(line, f"duplicate contact_id {row['contact_id'][:100]!r}"))
                continue
            seen.add(row["contact_id"])
            result.contacts.append(row)
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from exc
    return result

"""CSV tables vaekit writes: text cells that a spreadsheet would run as a formula are escaped (OWASP)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

# a cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """`value` for a CSV cell: text that starts like a formula gets a leading ' (numbers pass unchanged)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV table (header, then rows) with every text cell escaped by `safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([safe_cell(cell) for cell in header])
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()

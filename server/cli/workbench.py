"""What ``matrix``, ``diff`` and ``decide --input`` share: loading a bundle, tables, progress.

Tables render as text (aligned columns), Markdown, CSV or a standalone HTML page.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from server.cli import ExitCode
from server.decide import Decider
from server.errors import ErrorList, SnapshotError
from server.facts import parse_timestamp
from server.registry import build_decider

__all__ = ["Progress", "Stopwatch", "Table", "fail", "load", "parse_now", "render"]


def fail(as_json: bool, code: str, message: str, **extra: Any) -> None:
    """Report a command's error: a JSON document on stdout, or one line on stderr."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, **extra}}, indent=2, ensure_ascii=False))
    else:
        print(f"error: {message}", file=sys.stderr)


def parse_now(text: str | None, as_json: bool) -> tuple[dt.datetime | None, int]:
    """``--now`` as an aware datetime (None: not given) and 0, or None and the exit code after reporting it."""
    try:
        return (parse_timestamp(text, "now") if text else None), ExitCode.OK
    except SnapshotError as exc:
        fail(as_json, exc.code, str(exc), field=exc.field)
        return None, ExitCode.INVALID


def load(path: str, as_json: bool) -> Decider | int:
    """The bundle's decider, or the exit code after reporting why it does not load.

    A path that does not exist is an I/O failure (1); a bundle with errors is invalid (3).
    """
    if not Path(path).exists():
        fail(as_json, "bundle_io_error", f"bundle `{path}` does not exist")
        return ExitCode.FAILURE
    try:
        return build_decider(path)
    except ErrorList as exc:
        fail(
            as_json,
            "bundle_invalid",
            f"bundle `{path}` is invalid: {exc.errors[0] if exc.errors else exc}",
            errors=[e.to_dict() for e in exc.errors],
        )
        return ExitCode.INVALID


class Table:
    """Sections of rows under one header (a section per action, for instance)."""

    def __init__(self, title: str, header: Sequence[str]) -> None:
        self.title = title
        self.header = list(header)
        self.sections: list[tuple[str, list[list[str]]]] = []

    def add(self, section: str, row: Sequence[str]) -> None:
        if not self.sections or self.sections[-1][0] != section:
            self.sections.append((section, []))
        self.sections[-1][1].append(list(row))


def render(table: Table, fmt: str) -> str:
    """The table as ``text``, ``markdown``, ``csv`` or ``html``."""
    return {"text": _text, "markdown": _markdown, "csv": _csv, "html": _html}[fmt](table)


def _text(table: Table) -> str:
    out = [table.title]
    for section, rows in table.sections:
        widths = [max(len(r[i]) for r in [table.header, *rows]) for i in range(len(table.header))]
        out += ["", section]
        for row in [table.header, *rows]:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def _markdown(table: Table) -> str:
    out = [f"# {table.title}"]
    for section, rows in table.sections:
        out += ["", f"## {section}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", *table.header])
    for section, rows in table.sections:
        for row in rows:
            writer.writerow([section, *row])
    return buf.getvalue().rstrip("\n")


_STYLE = """body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}
td.ALLOW{background:#e6f4e6}td.DENY{background:#f8e3e3}td.ERROR{background:#fff2cc}"""


def _html(table: Table) -> str:
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(table.title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(table.title)}</h1>",
    ]
    for section, rows in table.sections:
        out.append(
            f"<h2>{e(section)}</h2><table><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in table.header)
            + "</tr></thead><tbody>"
        )
        for row in rows:
            out.append(
                "<tr>"
                + "".join(
                    f'<td class="{e(c)}">{e(c)}</td>' if c in ("ALLOW", "DENY", "ERROR") else f"<td>{e(c)}</td>"
                    for c in row
                )
                + "</tr>"
            )
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out)


class Stopwatch:
    """Wall and CPU time of a piece of work, and its rate in both (CPU time: what one core does,
    whatever else runs on the machine)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rate(self, count: int, what: str) -> str:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        per_wall = count / wall if wall > 0 else 0.0
        per_cpu = count / cpu if cpu > 0 else 0.0
        return f"in {wall:.2f} s ({per_wall:,.0f} {what}/s; {per_cpu:,.0f} per CPU second)"


class Progress:
    """A one-line progress bar on a terminal's stderr (nothing when stderr is not a terminal)."""

    def __init__(self, label: str, total_bytes: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and total_bytes > 0
        self.label = label
        self.total = total_bytes
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done_bytes: int, count: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        share = min(1.0, done_bytes / self.total)
        bar = "#" * int(share * 30)
        rate = count / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {count} inputs, {rate:,.0f}/s")
        self.stream.flush()

    def track(self, items: Iterable[Any]) -> Iterator[Any]:
        """``items`` as they are, updating the bar by each item's ``size`` in bytes."""
        if not self.enabled:
            yield from items
            return
        done = count = 0
        for item in items:
            done += item.size
            count += 1
            if count % 512 == 0:
                self.update(done, count)
            yield item

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()

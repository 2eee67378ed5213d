"""Small reStructuredText writers for the generated pages (no Sphinx import).

Docstrings from the code base are written as reStructuredText but were never meant to be
parsed by a document; :func:`docstring` checks each one with docutils first and falls back to
a literal block, so that an odd docstring somewhere in ``spec/`` cannot break a ``-W`` build.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence

_ROLE = re.compile(r":(?:[A-Za-z]+:)?[A-Za-z]+:`([^`]*)`")
_TRAILING_UNDERSCORE = re.compile(r"(\w)_(?=\W|$)")
_STARTS_LIKE_MARKUP = re.compile(r"^(?:[-*+]\s|\d+[.)]\s|#\.\s|\.\.\s|\|)")


def esc(text: str) -> str:
    """Plain text (a description, a guarantee) made safe to drop into reStructuredText."""
    out = text.replace("\\", "\\\\")
    for ch in "*`|":
        out = out.replace(ch, "\\" + ch)
    out = _TRAILING_UNDERSCORE.sub(r"\1\\_", out)
    if _STARTS_LIKE_MARKUP.match(out):
        out = "\\" + out
    return out


def lit(text: str) -> str:
    """Inline literal; a backtick inside falls back to an escaped plain string."""
    return f"``{text}``" if "`" not in text and text.strip() == text and text else esc(text)


def indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def title(text: str, char: str = "=", over: bool = False) -> str:
    bar = char * max(len(text), 3)
    return f"{bar}\n{text}\n{bar}\n" if over else f"{text}\n{bar}\n"


def _problems(text: str) -> list[str]:
    """What docutils says about ``text`` as a nested block (roles replaced by literals)."""
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    settings = get_default_settings(Parser)
    settings.report_level = 5
    settings.halt_level = 5
    settings.warning_stream = io.StringIO()
    doc = new_document("<docstring>", settings)
    found: list[str] = []
    doc.reporter.attach_observer(
        lambda msg: found.append(msg.astext()) if msg["level"] >= 2 else None)
    Parser().parse(_ROLE.sub(lambda m: f"``{m.group(1)}``", text), doc)
    if any(doc.findall(nodes.section)) or any(doc.findall(nodes.transition)):
        found.append("section titles or transitions are not allowed inside a description")
    return found


def _colon_blocks_literal(text: str) -> str:
    """A paragraph ending in ``:`` followed by an indented block becomes ``::`` (a literal
    block), the usual intent of a plain-text docstring drawing a little table."""
    lines = text.splitlines()
    out = list(lines)
    for i, line in enumerate(lines):
        if not line.rstrip().endswith(":") or line.rstrip().endswith("::"):
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j > i + 1 and j < len(lines) and len(lines[j]) - len(lines[j].lstrip()) > \
                len(line) - len(line.lstrip()):
            out[i] = line.rstrip() + ":"
    return "\n".join(out)


def docstring(text: str) -> str:
    """A docstring as reStructuredText that parses cleanly, or as a literal block."""
    text = text.strip("\n")
    if not text.strip():
        return ""
    if not _problems(text):
        return text
    fixed = _colon_blocks_literal(text)
    if fixed != text and not _problems(fixed):
        return fixed
    return "::\n\n" + indent(text, 3)


def first_paragraph(text: str) -> str:
    return text.strip().split("\n\n", 1)[0].replace("\n", " ") if text.strip() else ""


def cell(text: str) -> str:
    """One list-table cell body: continuation lines indented under the ``* -`` marker."""
    lines = (text or "\\-").splitlines() or ["\\-"]
    return "\n".join([lines[0], *[("       " + ln) if ln.strip() else "" for ln in lines[1:]]])


def bullets(items: Iterable[str]) -> str:
    """A bullet list whose items may span several lines."""
    out = []
    for item in items:
        first, *rest = item.splitlines() or [""]
        out.append("* " + first)
        out += [("  " + ln) if ln.strip() else "" for ln in rest]
    return "\n".join(out)


def list_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
               widths: Sequence[int] | None = None, classes: Sequence[str] = ("wide",),
               caption: str = "") -> str:
    """A list-table inside a ``table-scroll`` container, which scrolls sideways when the
    table is wider than the page (see ``_static/fastpath.css``)."""
    head = [f".. list-table:: {caption}".rstrip(), "   :header-rows: 1"]
    if widths:
        head.append(f"   :widths: {' '.join(map(str, widths))}")
    if classes:
        head.append(f"   :class: {' '.join(classes)}")
    body = []
    for row in [headers, *rows]:
        for i, c in enumerate(row):
            body.append(("   * - " if i == 0 else "     - ") + cell(c))
    table = "\n".join(head) + "\n\n" + "\n".join(body)
    return ".. container:: table-scroll\n\n" + indent(table, 3) + "\n"


def field_list(fields: Iterable[tuple[str, str]]) -> str:
    out = []
    for name, value in fields:
        first, *rest = value.splitlines() or [""]
        out.append(f":{name}: {first}")
        out += [("   " + ln) if ln.strip() else "" for ln in rest]
    return "\n".join(out)

"""The validation report as a document: sections of paragraphs, tables and figures, rendered
to one self-contained HTML page (figures as data URIs, no script, no external reference) or
to Markdown with its figures as files beside it."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "inf" if math.isinf(value) else ("-" if math.isnan(value) else f"{value:.{digits}f}")
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, digits)}" for k, v in value.items())
    return str(value)


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: bytes


Block = str | Table | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .5em;
font-size:.9em;text-align:left}th{background:#eee}img{max-width:100%;display:block}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}"""


def to_html(title: str, sections: list[Section]) -> str:
    out = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, str):
                out.append(f"<p>{html.escape(b)}</p>")
            elif isinstance(b, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in b.rows
                )
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                data = base64.b64encode(b.png).decode()
                out.append(
                    f"<figure><img src='data:image/png;base64,{data}' "
                    f"alt='{html.escape(b.caption)}' data-figure='{b.name}'>"
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
    out.append("</body></html>\n")
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(
    title: str, sections: list[Section], figure_dir: str
) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the figure files it links (relative to it, under `figure_dir`)."""
    lines, files = [f"# {title}", ""], {}
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif isinstance(b, Table):
                lines.append("| " + " | ".join(map(_md_cell, b.header)) + " |")
                lines.append("|" + "---|" * len(b.header))
                lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
                lines.append("")
            else:
                name = f"{figure_dir}/{b.name}.png"
                files[name] = b.png
                lines += [f"![{b.caption}]({name})", ""]
    return "\n".join(lines), files

"""The report as one self-contained HTML file: inline CSS, images as base64 data URIs, nothing fetched.

Self-contained so it can be mailed, attached to an MLflow run and opened offline, and so no external resource
(CDN, font) can leak that it was opened.
"""

from __future__ import annotations

import base64
from html import escape

from benchmark.report.document import Block, Bullets, Heading, Image, Text
from benchmark.report.tables import Table

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
.note { color: #555; font-size: 0.85em; margin-top: -1.2em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    anchor = f' id="{escape(t.anchor)}"' if t.anchor else ""
    caption = f"<caption>{escape(t.title)}</caption>" if t.title else ""
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return f"<table{anchor}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _image(img: Image) -> str:
    data = base64.b64encode(img.png).decode("ascii")
    return (
        f'<figure><img alt="{escape(img.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(img.title)}</figcaption></figure>"
    )


def to_html(blocks: list[Block], title: str) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            level = min(max(b.level, 1), 6)
            parts.append(f"<h{level}>{escape(b.text)}</h{level}>")
        elif isinstance(b, Text):
            parts.append(f"<p>{escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            parts.append(_table(b))
        elif isinstance(b, Image):
            parts.append(_image(b))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )

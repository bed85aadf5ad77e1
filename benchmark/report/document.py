"""The report as a list of blocks (headings, paragraphs, tables, lists, images), rendered to Markdown here and to
HTML in ``html.py``, so both outputs always say the same thing."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.report.tables import Table, to_markdown


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    title: str
    path: str  # relative to the report's folder (Markdown links to it; HTML embeds ``png``)
    png: bytes
    svg: bytes = b""  # the same figure as vector graphics, written beside the PNG (for papers and slides)

    @property
    def svg_path(self) -> str:
        return self.path.rsplit(".", 1)[0] + ".svg"


Block = Heading | Text | Bullets | Table | Image


def to_markdown_document(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            if b.title:
                out.append(f"**{b.title}**")
            out.append(to_markdown(b))
            if b.note:
                out.append(f"_{b.note}_")
        elif isinstance(b, Image):
            out.append(f"![{b.title}]({b.path})" + (f" ([SVG]({b.svg_path}))" if b.svg else ""))
    return "\n\n".join(out) + "\n"

"""The results section (Markdown with pipe tables, results/tables/section.md) as a standalone HTML page,
which ``snakemake --report`` shows inline (it only offers Markdown files for download)."""

from __future__ import annotations

from html import escape

from markdown_it import MarkdownIt

STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}"
    "th{background:#f0f0f0}"
)


def section_to_html(markdown: str, title: str = "ftbench results") -> str:
    # html=False: text in the tables (e.g. a skip reason) is shown, never interpreted as markup.
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n"
    )

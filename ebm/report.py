"""One self-contained HTML page per experiment: every figure embedded, every metric listed."""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from typing import Mapping, Sequence

from ebm.io import write_text_atomic

SECTIONS = ("Metrics", "Samples", "What the classifier reads", "Langevin chains", "Training", "Energies",
            "Out-of-distribution detection", "Chain health", "Coverage and memorisation", "Long-run check")

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.3em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}.meta{color:#666;font-size:90%}"""


def embed(path: str | Path) -> str:
    """An <img> with the file inlined as a data URI."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:{mime};base64,{data}">'


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(title: str, meta: Mapping[str, str], sections: Mapping[str, Sequence[str]]) -> str:
    """``sections`` maps a heading to HTML fragments (tables, embedded images, paragraphs)."""
    meta_html = " · ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in meta.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>{meta_html}</p>"]
    for heading, fragments in sections.items():
        parts.append(f"<h2 id='{html.escape(heading.lower().replace(' ', '-'))}'>{html.escape(heading)}</h2>")
        parts.extend(fragments)
    parts.append("</body></html>")
    return "\n".join(parts)


def write(path: str | Path, title: str, meta: Mapping[str, str], sections: Mapping[str, Sequence[str]]) -> Path:
    return write_text_atomic(path, render(title, meta, sections))

"""Small helpers shared by the report sections (HTML + Markdown + PNG plots).

A report section is a module ``pipelines/report_<topic>.py`` with::

    def section(out_dir: str) -> Section | None   # None: that stage did not run

``pipelines/report.py`` lists the section modules in ``SECTIONS`` and stitches
them into ``report.html`` (plots embedded) and ``report.md`` (plots linked from
``report/``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)  # ("p"|"table"|"plot"|"pre", payload)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> "Section":
        self.blocks.append(("table", (list(headers), [list(r) for r in rows], caption)))
        return self

    def plot(self, fig, name: str, caption: str | None = None) -> "Section":
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(("plot", (name, buf.getvalue(), caption)))
        return self

    def pre(self, text: str) -> "Section":
        self.blocks.append(("pre", text))
        return self


def read_json(out_dir: str, name: str) -> Any | None:
    from apache_beam.io.filesystems import FileSystems

    path = join(out_dir, name)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read())


def read_parquet_dir(out_dir: str, subdir: str, columns: list[str] | None = None):
    """All Parquet files of ``out_dir/subdir`` as one Arrow table (None if absent).
    Only for small outputs (samples, dropped rows) — never the corpus itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    res = FileSystems.match([join(out_dir, subdir, "*.parquet")])[0].metadata_list
    if not res:
        return None
    tables = []
    for m in sorted(res, key=lambda m: m.path):
        with FileSystems.open(m.path) as f:
            tables.append(pq.read_table(io.BytesIO(f.read()), columns=columns))
    return pa.concat_tables(tables)


def join(*parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def render_html(sec: Section, plot_dir_rel: str) -> str:
    out = [f"<h2>{html.escape(sec.title)}</h2>"]
    for kind, payload in sec.blocks:
        if kind == "p":
            out.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(payload)}</pre>")
        elif kind == "table":
            headers, rows, caption = payload
            cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "plot":
            name, png, caption = payload
            b64 = base64.b64encode(png).decode()
            cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            out.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}"/>{cap}</figure>')
    return "\n".join(out)


def _md_cell(v: Any) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def render_md(sec: Section, plot_dir_rel: str) -> str:
    out = [f"## {sec.title}", ""]
    for kind, payload in sec.blocks:
        if kind == "p":
            out += [payload, ""]
        elif kind == "pre":
            out += ["```", payload, "```", ""]
        elif kind == "table":
            headers, rows, caption = payload
            if caption:
                out += [f"*{caption}*", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("")
        elif kind == "plot":
            name, _, caption = payload
            out += [f"![{caption or name}]({plot_dir_rel}/{name}.png)", ""]
    return "\n".join(out)


def new_figure(width: float = 7, height: float = 3.2):
    return plt.subplots(figsize=(width, height))

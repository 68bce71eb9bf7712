"""The page itself: escaping, the HTML skeleton, the vendored viewer and the page-side script.

Every string that comes from an input (protein ids, sequences, file names, settings) reaches the page
through :func:`esc` (HTML text and attribute values) or :func:`script_json` (data embedded in a
``<script>`` element or a ``.js`` file): nothing read from an input is ever written raw.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from ..outputs import write_text

VIEWER = "3Dmol-min.js"
VIEWER_VERSION = "3Dmol.js 2.5.5 (npm 3dmol@2.5.5, BSD-3-Clause)"
FILES_DIR = "report_files"  # next to report.html: the viewer, the page script, per-protein data
# nothing may be fetched: no connection, no frame, no form target; scripts only inline or from files here
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'self' file:; style-src 'unsafe-inline'; "
       "img-src data: 'self' file:; connect-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'")


def esc(value: Any) -> str:
    """HTML-escaped text for element content and quoted attribute values (quotes escaped too)."""
    return html.escape("" if value is None else str(value), quote=True)


def _plain(obj: Any) -> Any:
    """JSON has no NaN or inf: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script>`` (and a .js file): ``<``, ``>``, ``&`` and the line
    separators U+2028/U+2029 are written as \\u escapes, so no string in it can close the element,
    open a comment or end a JavaScript line."""
    text = json.dumps(_plain(obj), ensure_ascii=False, allow_nan=False, default=str, separators=(",", ":"))
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def _asset(name: str) -> str:
    return resources.files("allo_lightning.html").joinpath(name).read_text(encoding="utf-8")


def copy_assets(out: Path, viewer: bool) -> Path:
    """Copy the page script (and the 3-D viewer with its licence, when a page needs it) into
    ``out/report_files``; returns that folder."""
    files = Path(out) / FILES_DIR
    files.mkdir(parents=True, exist_ok=True)
    write_text(files / "report.js", _asset("report.js"))
    if viewer:
        vendor = resources.files("allo_lightning.html").joinpath("vendor")
        for name in (VIEWER, "3Dmol-LICENSE.txt"):
            with resources.as_file(vendor.joinpath(name)) as src:
                target = files / name
                if not target.exists() or target.stat().st_size != Path(src).stat().st_size:
                    shutil.copyfile(src, target)
    return files


def document(title: str, body: str, data: dict, viewer: bool, prefix: str = "") -> str:
    """A whole page: ``body`` is trusted HTML built with :func:`esc`; ``data`` is embedded as JSON
    (``#allo-data``) for the page script; ``prefix`` leads from the page to report.html's folder."""
    scripts = (f'<script src="{esc(prefix + FILES_DIR)}/{VIEWER}"></script>\n' if viewer else "") + \
        f'<script src="{esc(prefix + FILES_DIR)}/report.js"></script>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_asset("report.css")}</style>
</head><body>
{body}
<script type="application/json" id="allo-data">{script_json(data)}</script>
{scripts}
</body></html>
"""


def table(header: list[str], rows: list[list[Any]], cls: str = "sortable", numeric: set[int] | None = None,
          row_attrs: list[dict] | None = None, caption: str = "", table_id: str = "") -> str:
    """A sortable HTML table (click a header to sort); every cell escaped; floats with 3 decimals and
    their exact value as ``data-v`` for sorting."""
    numeric = numeric if numeric is not None else set()
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{esc(h)}</th>' for i, h in enumerate(header))
    out = [f'<table class="{esc(cls)}"' + (f' id="{esc(table_id)}"' if table_id else "") + ">"
           + (f"<caption>{esc(caption)}</caption>" if caption else "")
           + f"<thead><tr>{head}</tr></thead><tbody>"]
    for k, row in enumerate(rows):
        attrs = "".join(f' {esc(a)}="{esc(v)}"' for a, v in (row_attrs[k] if row_attrs else {}).items())
        cells = []
        for v in row:
            if isinstance(v, float):
                shown = "" if not math.isfinite(v) else (f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}")
                cells.append(f'<td class="num" data-v="{esc(repr(v))}">{esc(shown)}</td>')
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f'<td class="num" data-v="{v}">{v}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        out.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def settings_block(config: dict | None, backbone: str, note: str, extra: dict | None = None) -> str:
    """The run's backbone, the tiny backbone's warning and the resolved settings (folded)."""
    parts = []
    if note:
        parts.append(f'<p class="warn"><b>{esc(note)}</b></p>')
    parts.append(f"<p>Backbone: <code>{esc(backbone)}</code></p>")
    rows = [[k, v] for k, v in (extra or {}).items()]
    for section, values in (config or {}).items():
        if isinstance(values, dict):
            rows += [[f"{section}.{k}", json.dumps(v, default=str) if not isinstance(v, str) else v]
                     for k, v in values.items()]
        else:
            rows.append([section, values if isinstance(values, str) else json.dumps(values, default=str)])
    if rows:
        parts.append("<details><summary>Settings of this run</summary>" + table(["setting", "value"], rows)
                     + "</details>")
    return "".join(parts)

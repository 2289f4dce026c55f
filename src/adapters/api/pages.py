"""What the pages for people share: escaping, the layout, the style sheet, the headers.

Pages are server-rendered HTML with no build step and no external asset: the style
sheet and the reference's script are strings of this package, served by the app under
`/assets/` (so that the Content-Security-Policy can forbid inline script and style and
every other origin: a page that fetched a font or a script from elsewhere would break
without a network, and leak who reads it).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Final

from starlette.responses import Response

STYLE_PATH: Final = "/assets/site.css"
SCRIPT_PATH: Final = "/assets/docs.js"

# Only this origin, for everything; no inline script or style; no framing (clickjacking
# of the sign-out button); forms post only here.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it a browser sends `Origin: null` on our own forms' POSTs,
    # and the forms' origin check (ui.py) could not tell them from another site's.
    "Referrer-Policy": "same-origin",
    # An account page holds account data: no cache keeps it after sign-out.
    "Cache-Control": "no-store",
}


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(value), quote=True)


def layout(title: str, body: str, *, script: bool = False) -> str:
    tag = f'<script src="{SCRIPT_PATH}" defer></script>' if script else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="{STYLE_PATH}">{tag}</head>'
        f"<body>{body}</body></html>\n"
    )


def html_response(
    text: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        text.encode("utf-8", "backslashreplace"),
        status_code=status,
        headers={**SECURITY_HEADERS, **(headers or {})},
        media_type="text/html; charset=utf-8",
    )


def asset_response(text: str, media_type: str) -> Response:
    return Response(
        text.encode(),
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        media_type=media_type,
    )


STYLE: Final = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #d9dee8; --accent: #2457c5;
        --good: #1f7a4d; --bad: #b3261e; --paper: #ffffff; --wash: #f5f7fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: var(--wash); }
header.bar { display: flex; align-items: center; justify-content: space-between;
             padding: 12px 24px; background: var(--ink); color: #fff; }
header.bar h1 { font-size: 18px; margin: 0; }
header.bar form { margin: 0; }
header.bar a, header.bar .muted { color: #fff; }
main { max-width: 1080px; margin: 0 auto; padding: 16px 24px 48px; }
section.card { background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
               padding: 16px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); }
.pools { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr));
         gap: 16px; }
.pool { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.pool .big { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
          gap: 16px; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; background: #fff; }
svg.chart .grid { stroke: var(--line); }
svg.chart text { font-size: 11px; fill: var(--muted); }
nav.pager { display: flex; gap: 16px; margin-top: 8px; }
a { color: var(--accent); }
button, input[type=submit] { font: inherit; padding: 6px 14px; border-radius: 6px;
        border: 1px solid var(--accent); background: var(--accent); color: #fff;
        cursor: pointer; }
header.bar button { background: transparent; border-color: #fff; }
form.sign-in { max-width: 460px; margin: 64px auto; }
form.sign-in input[type=password] { width: 100%; padding: 8px; font: inherit;
        border: 1px solid var(--line); border-radius: 6px; margin: 8px 0 12px; }
p.error { color: var(--bad); font-weight: 600; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; }
pre { background: var(--wash); padding: 8px 12px; border-radius: 6px; overflow-x: auto; }
.method { display: inline-block; min-width: 56px; text-align: center; border-radius: 4px;
          color: #fff; font-weight: 700; font-size: 12px; padding: 2px 6px; }
.method.get { background: #1f7a4d; } .method.post { background: #2457c5; }
.method.put { background: #8a5a00; }
.docs { display: grid; grid-template-columns: 260px 1fr; gap: 24px; }
.docs nav.toc { position: sticky; top: 8px; align-self: start; font-size: 13px; }
.docs nav.toc ul { list-style: none; padding: 0; margin: 0; }
.docs nav.toc li { margin: 4px 0; }
.console { border: 2px solid var(--accent); }
.console label { display: block; font-size: 13px; color: var(--muted); margin-top: 8px; }
.console input, .console select, .console textarea { width: 100%; font: inherit;
        padding: 6px; border: 1px solid var(--line); border-radius: 6px; }
.console textarea { min-height: 96px; font-family: ui-monospace, monospace; }
"""

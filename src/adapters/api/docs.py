"""`/docs`: the API reference for people, generated from the OpenAPI document.

Rendered on the server from the same document `/openapi.json` serves (so the two never
disagree), once per app: every operation with its parameters, request body (fields,
constraints, example), answers and headers; every body's fields; the problem types. A
small console at the top sends a request from the page itself (the "Try it" button of an
operation fills it in), with the key kept in the page's memory only.

Why not Swagger UI: the package on PyPI that ships it alone (swagger-ui-bundle 1.1.0)
carries Swagger UI 4, which cannot read OpenAPI 3.1; the one with Swagger UI 5
(swagger-ui-py) brings Jinja2, PyYAML and a top-level `test` package into every install.
A page of our own needs no asset from elsewhere and no dependency, and works without JS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

from adapters.api.pages import esc, layout

Json = Mapping[str, Any]
_METHODS: Final = ("get", "post", "put", "delete", "patch")
_REF_PREFIX: Final = "#/components/schemas/"


def _anchor(name: str) -> str:
    return "schema-" + name


def _ref_link(ref: str) -> str:
    name = ref.removeprefix(_REF_PREFIX)
    return f'<a href="#{esc(_anchor(name))}">{esc(name)}</a>'


def describe(schema: Json) -> str:
    """A schema's type in words, as HTML (links to the bodies it names)."""
    if "$ref" in schema:
        return _ref_link(schema["$ref"])
    if "anyOf" in schema:
        return " or ".join(describe(part) for part in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{esc(json.dumps(v))}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        text = "array of " + describe(schema.get("items", {}))
    else:
        text = esc(kind)
        if "format" in schema:
            text += f" ({esc(schema['format'])})"
    return text + _constraints(schema)


def _constraints(schema: Json) -> str:
    words = []
    for key, say in (
        ("minimum", "&ge; {}"),
        ("maximum", "&le; {}"),
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("pattern", "matching <code>{}</code>"),
        ("default", "default {}"),
    ):
        if key in schema:
            value = schema[key]
            words.append(say.format(esc(value if key == "pattern" else json.dumps(value))))
    return f' <span class="muted">({", ".join(words)})</span>' if words else ""


def _fields(schema: Json) -> str:
    properties: Json = schema.get("properties", {})
    required = set(schema.get("required", ()))
    optional = ' <span class="muted">optional</span>'
    rows = "".join(
        f"<tr><td><code>{esc(name)}</code>{'' if name in required else optional}</td>"
        f"<td>{describe(field)}</td><td>{esc(field.get('description', ''))}</td></tr>"
        for name, field in properties.items()
    )
    return (
        "<table><thead><tr><th>field</th><th>type</th><th>meaning</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _operations(document: Json) -> Iterator[tuple[str, str, Json, list[Json]]]:
    for path, item in document["paths"].items():
        shared = list(item.get("parameters", ()))
        for method in _METHODS:
            if method in item:
                yield path, method, item[method], shared + list(item[method].get("parameters", ()))


def _operation(path: str, method: str, operation: Json, parameters: list[Json]) -> str:
    op_id = operation["operationId"]
    parts = [
        f'<section class="card operation" id="op-{esc(op_id)}" data-operation="{esc(op_id)}">',
        f'<h2><span class="method {method}">{method.upper()}</span> <code>{esc(path)}</code></h2>',
        f"<p>{esc(operation.get('summary', ''))}</p>",
    ]
    if "description" in operation:  # test mode's routes (the magic values' table)
        parts.append(f"<pre>{esc(operation['description'])}</pre>")
    if operation.get("security") == []:
        parts.append('<p class="muted">No API key needed.</p>')
    if parameters:
        cells = "".join(
            f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}"
            f"{'' if p.get('required') else ', optional'}</td>"
            f"<td>{describe(p.get('schema', {}))}</td><td>{esc(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append(
            "<h3>Parameters</h3><table><thead><tr><th>name</th><th>in</th><th>type</th>"
            f"<th>meaning</th></tr></thead><tbody>{cells}</tbody></table>"
        )
    example = ""
    body = operation.get("requestBody")
    if body is not None:
        media = body["content"]["application/json"]
        parts.append(f"<h3>Request body</h3><p>JSON: {describe(media['schema'])}</p>")
        if "example" in media:
            example = json.dumps(media["example"], indent=2)
            parts.append(f"<pre>{esc(example)}</pre>")
    rows = []
    for status, response in operation["responses"].items():
        content: Json = response.get("content", {})
        bodies = ", ".join(
            f"<code>{esc(media_type)}</code> {describe(media.get('schema', {}))}"
            for media_type, media in content.items()
        )
        headers = ", ".join(f"<code>{esc(h)}</code>" for h in response.get("headers", {}))
        rows.append(
            f"<tr><td>{esc(status)}</td><td>{esc(response['description'])}</td>"
            f"<td>{bodies}</td><td>{headers}</td></tr>"
        )
    parts.append(
        "<h3>Answers</h3><table><thead><tr><th>status</th><th>when</th><th>body</th>"
        f"<th>headers</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    parts.append(
        f'<p><button type="button" class="try" data-method="{method.upper()}" '
        f'data-path="{esc(path)}" data-body="{esc(example)}">Try it</button></p></section>'
    )
    return "".join(parts)


_CONSOLE: Final = """
<section class="card console" id="console">
<h2>Try a request</h2>
<p class="muted">Sent from this page to this server. The key stays in this page's memory:
it is not stored, and is gone when you leave the page.</p>
<form id="try-form">
<label for="try-key">API key (Authorization: Bearer)</label>
<input id="try-key" type="password" autocomplete="off" spellcheck="false">
<label for="try-account">Account (fills {account} in the path)</label>
<input id="try-account" type="text" spellcheck="false">
<label for="try-method">Method</label>
<select id="try-method"><option>GET</option><option>POST</option><option>PUT</option></select>
<label for="try-path">Path</label>
<input id="try-path" type="text" value="/v1/accounts/{account}/balance" spellcheck="false">
<label for="try-idempotency">Idempotency-Key (optional)</label>
<input id="try-idempotency" type="text" spellcheck="false">
<label for="try-body">Body (JSON)</label>
<textarea id="try-body" spellcheck="false"></textarea>
<p><button type="submit" id="try-send">Send</button></p>
</form>
<pre id="try-answer" aria-live="polite"></pre>
</section>
"""

# The console's script, served as /assets/docs.js (no inline script: see pages.py).
SCRIPT: Final = """
"use strict";
(function () {
  const form = document.getElementById("try-form");
  const answer = document.getElementById("try-answer");
  const field = (id) => document.getElementById(id);
  for (const button of document.querySelectorAll("button.try")) {
    button.addEventListener("click", () => {
      field("try-method").value = button.dataset.method;
      field("try-path").value = button.dataset.path;
      field("try-body").value = button.dataset.body;
      field("console").scrollIntoView();
      field("try-key").focus();
    });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const method = field("try-method").value;
    const headers = {};
    const key = field("try-key").value.trim();
    if (key) headers["Authorization"] = "Bearer " + key;
    const idempotency = field("try-idempotency").value.trim();
    if (idempotency) headers["Idempotency-Key"] = idempotency;
    const init = { method: method, headers: headers, credentials: "omit" };
    const body = field("try-body").value.trim();
    if (method !== "GET" && body) {
      headers["Content-Type"] = "application/json";
      init.body = body;
    }
    answer.textContent = "...";
    try {
      const account = encodeURIComponent(field("try-account").value.trim());
      const path = field("try-path").value.trim().split("{account}").join(account);
      const response = await fetch(path, init);
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) {}
      answer.textContent = response.status + " " + response.statusText + "\\n" + shown;
      answer.dataset.status = String(response.status);
    } catch (error) {
      answer.textContent = "The request failed: " + error;
      answer.dataset.status = "failed";
    }
  });
})();
"""


def docs_page(document: Json) -> str:
    """The whole reference as one HTML page."""
    info = document["info"]
    operations = list(_operations(document))
    toc = "".join(
        f'<li><a href="#op-{esc(op["operationId"])}"><span class="method {method}">'
        f"{method.upper()}</span> {esc(path.removeprefix('/v1/accounts/{account}'))}</a></li>"
        for path, method, op, _ in operations
    )
    schemas: Json = document["components"]["schemas"]
    bodies = "".join(
        f'<section class="card" id="{esc(_anchor(name))}"><h2>{esc(name)}</h2>'
        f"<p>{esc(schema.get('description', ''))}</p>{_fields(schema)}</section>"
        for name, schema in schemas.items()
        if name != "Problem"
    )
    problem = schemas["Problem"]
    types = "".join(
        f"<li><code>{esc(uri)}</code></li>" for uri in problem["properties"]["type"]["enum"]
    )
    body = (
        f'<header class="bar"><h1>{esc(info["title"])} {esc(info["version"])}</h1>'
        '<a href="/openapi.json">openapi.json</a></header>'
        '<main class="docs"><nav class="toc"><ul>'
        f'<li><a href="#console">Try a request</a></li>{toc}'
        '<li><a href="#bodies">Bodies</a></li><li><a href="#problems">Problems</a></li>'
        "</ul></nav><div>"
        f'<section class="card"><p>{esc(info["description"])}</p>'
        '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a>. '
        'An account\'s own page, for people: <a href="/ui">/ui</a>.</p></section>'
        f"{_CONSOLE}"
        + "".join(_operation(*op) for op in operations)
        + f'<h2 id="bodies">Bodies</h2>{bodies}'
        f'<section class="card" id="problems"><h2>Problems</h2>'
        f"<p>{esc(problem.get('description', ''))}</p>{_fields(problem)}"
        f"<h3>Types</h3><ul>{types}</ul></section>"
        "</div></main>"
    )
    return layout(f"{info['title']} reference", body, script=True)

// The API reference: draws /openapi.json (served by the same gateway) as one section per tag,
// each operation with its parameters, body, answer and who may call it. Plain DOM, no
// dependencies, so it works offline; text goes in through textContent only.
"use strict";

const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
};

// A schema as readable text: $refs resolved one level at a time, named where they point.
function describe(doc, schema, depth) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (depth > 2) return name;
    return name + " " + describe(doc, doc.components.schemas[name], depth + 1);
  }
  if (schema.allOf) return schema.allOf.map((s) => describe(doc, s, depth)).join(" & ");
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array" || (Array.isArray(schema.type) && schema.items)) {
    return type.replace("array", "[" + describe(doc, schema.items, depth + 1) + "]");
  }
  if (schema.properties) {
    const required = new Set(schema.required || []);
    const pad = "  ".repeat(depth + 1);
    const lines = Object.entries(schema.properties).map(
      ([k, v]) => pad + k + (required.has(k) ? "" : "?") + ": " + describe(doc, v, depth + 1),
    );
    return "{\n" + lines.join("\n") + "\n" + "  ".repeat(depth) + "}";
  }
  return type;
}

function operation(doc, path, method, op) {
  const body = el("div", { class: "body" });
  const auth = (op.security || []).map((s) => Object.keys(s)[0]);
  body.append(el("p", { class: "muted" }, auth.length ? "Token: " + auth.join(" or ") : "No token needed"));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) =>
      el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.description || "")),
    );
    body.append(el("table", {}, ...rows));
  }
  const req = op.requestBody && op.requestBody.content["application/json"];
  if (req) body.append(el("h4", {}, "Body"), el("pre", {}, describe(doc, req.schema, 0)));
  for (const [status, r] of Object.entries(op.responses || {})) {
    const content = r.content && Object.entries(r.content)[0];
    body.append(el("h4", {}, status + " " + (r.description || "")));
    if (content) body.append(el("pre", {}, content[0] + "\n" + describe(doc, content[1].schema, 0)));
  }
  const summary = el(
    "summary",
    {},
    el("span", { class: "m " + method }, method),
    el("code", {}, path),
    " ",
    el("span", { class: "muted" }, op.summary || ""),
  );
  const d = el("details", { class: "op", "data-route": method + " " + path });
  d.append(summary, body);
  return d;
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("about").textContent =
    doc.info.title + " " + doc.info.version + " · OpenAPI " + doc.openapi + " · " + doc.info.description;
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["Other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(doc, path, method, op));
    }
  }
  const ops = document.getElementById("ops");
  const tags = document.getElementById("tags");
  let i = 0;
  for (const [tag, list] of byTag) {
    if (!list.length) continue;
    const id = "tag-" + i++;
    const about = (doc.tags || []).find((t) => t.name === tag);
    ops.append(el("section", { id }, el("h2", {}, tag), el("p", { class: "muted" }, about ? about.description : ""), ...list));
    tags.append(el("a", { href: "#" + id }, tag + " (" + list.length + ")"));
  }
  document.getElementById("filter").addEventListener("input", (e) => {
    const q = e.target.value.toLowerCase();
    for (const d of document.querySelectorAll(".op")) {
      d.style.display = d.textContent.toLowerCase().includes(q) ? "" : "none";
    }
  });
}

main().catch((e) => {
  document.getElementById("about").textContent = "Could not load /openapi.json: " + e;
});

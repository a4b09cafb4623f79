//! Tidy: every source file opens with a `//!` header saying what it owns; the stage
//! boundaries hold (`redb` only in `store`, `reqwest` only in `deliver`, `wasmtime` only in
//! `plugin`, `hyper` only in `serve`); imports only go down the layers of `ARCHITECTURE.md`,
//! with no circle; and no function runs past a hundred lines.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn gateway_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_module_opens_with_a_header() {
    for (rel, text) in gateway_sources() {
        assert!(text.starts_with("//!"), "gateway/{rel} must open with a //! header");
    }
}

#[test]
fn crates_stay_inside_their_stage() {
    let owners = [
        ("redb", "store"),
        ("tokio_postgres", "store"),
        ("deadpool_postgres", "store"),
        ("reqwest", "deliver"),
        ("wasmtime", "plugin"),
        ("hyper", "serve"),
        ("hyper_util", "serve"),
        ("utoipa", "openapi"),
    ];
    for (rel, text) in gateway_sources() {
        for (krate, owner) in owners {
            let uses = text.lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with("//") && (l.contains(&format!("{krate}::")) || l.contains(&format!("use {krate}")))
            });
            let inside = rel.starts_with(owner);
            assert!(!uses || inside, "gateway/{rel} uses {krate}, which belongs to gateway/{owner}");
        }
    }
}

/// `unsafe` is denied crate-wide; the one allowed use (loading our own compiled-plugin cache)
/// stays in `plugin/cache.rs`, next to its SAFETY comment.
#[test]
fn unsafe_only_in_the_plugin_cache() {
    for (rel, text) in gateway_sources() {
        let uses = text.lines().any(|l| {
            let l = l.trim_start();
            !l.starts_with("//") && (l.contains("unsafe {") || l.contains("allow(unsafe_code)"))
        });
        assert!(!uses || rel == "plugin/cache.rs", "gateway/{rel} uses unsafe");
    }
    let cache = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway/plugin/cache.rs")).unwrap();
    assert!(cache.contains("// SAFETY:"), "the unsafe block must carry a SAFETY comment");
}

/// Routes are added in one place only, from `http.rs`'s documented table, so that
/// `/openapi.json` (built from the same table) cannot miss one.
#[test]
fn routes_come_only_from_the_documented_table() {
    for (rel, text) in gateway_sources() {
        for (n, l) in text.lines().enumerate() {
            let l = l.trim_start();
            if l.starts_with("//") || !(l.contains(".route(") || l.contains(".nest(") || l.contains(".merge(")) {
                continue;
            }
            assert!(
                rel == "http.rs" && l.contains("op.path"),
                "gateway/{rel}:{}: add routes to the table in http.rs, not with .route/.nest/.merge",
                n + 1
            );
        }
    }
}

/// A skipped test must be seen: the harness captures `eprintln!`/`println!`, so a skip printed
/// that way shows as a plain `ok`. Skips go through `util::skipped` (or write to
/// `std::io::stderr()` directly), and `.ci/run` sets `CI` itself so that nothing skips there.
#[test]
fn skips_reach_the_terminal_and_ci_never_skips() {
    // Spelt in two parts so that this file does not match itself.
    let marker = concat!("SKIP", "PED");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("gateway"), &mut files);
    sources(&root.join("tests"), &mut files);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // The macro call and its format string may sit on the next lines.
            let call = lines[i..lines.len().min(i + 3)].concat();
            let printed = ["eprintln!(", "println!(", "eprint!(", "print!("].iter().any(|m| line.contains(m));
            assert!(
                !(printed && call.contains(marker)),
                "{}:{}: a skip line printed with a capturable macro; use util::skipped",
                path.display(),
                i + 1
            );
        }
    }
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let exported = ci.lines().position(|l| l.trim() == "export CI=true");
    let tested = ci.lines().position(|l| l.trim_start().starts_with("cargo test"));
    assert!(
        matches!((exported, tested), (Some(e), Some(t)) if e < t),
        ".ci/run must `export CI=true` before it runs the tests, so that no test can skip there"
    );
}

/// The layers of `gateway/`, top to bottom (see the top of `ARCHITECTURE.md`). A module sits in
/// the layer of the longest prefix of its path listed here; a file may import its own layer or
/// lower ones, never a higher one. `lib.rs` and `main.rs` are the wiring above them all.
const LAYERS: &[(&str, &[&str])] = &[
    ("HTTP surface", &["http"]),
    ("handlers", &["api"]),
    ("services", &["ingest", "dispatch", "tenants", "live", "retention", "workbench", "listen"]),
    (
        "domain and storage",
        &[
            "store",
            "plugin",
            "deliver",
            "health",
            "registry",
            "fanout",
            "events",
            "operations",
            "metrics",
            "serve",
            "telemetry",
            "schemas",
        ],
    ),
    (
        "pure leaves",
        &["sign", "json", "retry", "clock", "seal", "config", "endpoint", "model", "tally", "deliver/guard", "openapi"],
    ),
];

/// A module's path inside the crate: `store/pg/write/mod.rs` is `store/pg/write`.
fn module_of(rel: &str) -> String {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    rel.strip_suffix("/mod").unwrap_or(rel).to_owned()
}

/// The layer index of a module (0 is the top), or `None` for the wiring (`lib`, `main`).
fn layer_of(module: &str) -> Option<usize> {
    if module == "lib" || module == "main" {
        return None;
    }
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, prefixes)) in LAYERS.iter().enumerate() {
        for p in *prefixes {
            let hit = module == *p || module.starts_with(&format!("{p}/"));
            if hit && best.is_none_or(|(len, _)| p.len() > len) {
                best = Some((p.len(), i));
            }
        }
    }
    Some(best.unwrap_or_else(|| panic!("gateway/{module} is in no layer: add it to LAYERS in tests/tidy.rs")).1)
}

/// Every project module a file names through `crate::…` or `super::…`, with the line: the
/// longest path prefix that is a module of `modules`. A parent's use of its own children (by
/// their bare names, as a façade does) is not an import between floors and is not read.
fn imports(module: &str, text: &str, modules: &[String]) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let parent = |m: &str| m.rsplit_once('/').map(|(p, _)| p.to_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // A file's unit tests (`#[cfg(test)] mod …`) may reach anything, and their `super` is the
    // file itself: they are not read.
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    for (n, line) in lines[..end].iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (start, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            // `pub(crate)` and `pub(super)` are visibility, not paths.
            if start > 0 && code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[start..];
            let mut base = if rest.starts_with("crate::") { String::new() } else { parent(module) };
            let mut tail = rest.strip_prefix("crate::").or_else(|| rest.strip_prefix("super::")).unwrap();
            while let Some(t) = tail.strip_prefix("super::") {
                base = parent(&base);
                tail = t;
            }
            let segments: Vec<&str> = tail
                .split("::")
                .map_while(|s| {
                    let s: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    (!s.is_empty()).then_some(s)
                })
                .map(|s| &tail[tail.find(&s).unwrap()..][..s.len()])
                .collect();
            let mut target = None;
            let mut path = base.clone();
            for s in segments {
                path = if path.is_empty() { s.to_owned() } else { format!("{path}/{s}") };
                if modules.contains(&path) {
                    target = Some(path.clone());
                }
            }
            // `use super::{a, b}` names the parent itself.
            let target = target.or_else(|| (!base.is_empty() && modules.contains(&base)).then(|| base.clone()));
            if let Some(t) = target
                && t != module
            {
                out.push((t, n + 1, line.trim().to_owned()));
            }
        }
    }
    out
}

/// Every import that climbs a layer, as `file:line: use … (layer a imports layer b)`.
fn upward_imports(files: &[(String, String)]) -> Vec<String> {
    let modules: Vec<String> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let mut found = Vec::new();
    for (rel, text) in files {
        let module = module_of(rel);
        let Some(own) = layer_of(&module) else { continue };
        for (target, line, code) in imports(&module, text, &modules) {
            if let Some(theirs) = layer_of(&target)
                && theirs < own
            {
                found.push(format!(
                    "gateway/{rel}:{line}: `{code}`: the {} layer imports {target} from the {} layer above it",
                    LAYERS[own].0, LAYERS[theirs].0
                ));
            }
        }
    }
    found
}

/// The import circles between files, each as the files it passes through.
fn circles(files: &[(String, String)]) -> Vec<Vec<String>> {
    let modules: Vec<String> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let edges: Vec<Vec<usize>> = files
        .iter()
        .map(|(rel, text)| {
            let mut to: Vec<usize> = imports(&module_of(rel), text, &modules)
                .into_iter()
                .filter_map(|(t, _, _)| modules.iter().position(|m| *m == t))
                .collect();
            to.sort_unstable();
            to.dedup();
            to
        })
        .collect();
    // Tarjan's strongly connected components; any component of two or more files is a circle.
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, edges: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &edges[v] {
            match s.index[w] {
                None => {
                    visit(w, edges, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let n = files.len();
    let mut s = State {
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on: vec![false; n],
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &edges, &mut s);
        }
    }
    s.out.into_iter().map(|c| c.into_iter().map(|i| format!("gateway/{}", files[i].0)).collect()).collect()
}

#[test]
fn imports_only_go_down_the_layers() {
    let found = upward_imports(&gateway_sources());
    assert!(found.is_empty(), "imports that climb a layer:\n{}", found.join("\n"));
}

#[test]
fn no_import_circles() {
    let found = circles(&gateway_sources());
    assert!(found.is_empty(), "import circles:\n{found:#?}");
}

/// The checks above can fail: a leaf that imports the store, and two services that import
/// each other, are both caught, with the offending line.
#[test]
fn a_reversed_import_fails_tidy() {
    let file = |rel: &str, text: &str| (rel.to_owned(), text.to_owned());
    let files = vec![
        file("sign.rs", "//! Signing.\nuse crate::json;\nuse crate::store::Store;\n"),
        file("json.rs", "//! JSON.\n"),
        file("store/mod.rs", "//! Store.\nuse crate::model::EventRecord;\n"),
        file("model.rs", "//! Records.\n"),
        file("live.rs", "//! Live.\nuse crate::retention::Report;\n"),
        file("retention.rs", "//! Retention.\nfn f() { crate::live::status(); }\n"),
    ];
    let up = upward_imports(&files);
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].starts_with("gateway/sign.rs:3: `use crate::store::Store;`"), "{}", up[0]);
    let found = circles(&files);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut circle = found[0].clone();
    circle.sort();
    assert_eq!(circle, ["gateway/live.rs", "gateway/retention.rs"]);
}

/// The longest function allowed in `gateway/`, in lines from its signature to its closing
/// brace: past it, a function is split along its seams.
const MAX_FUNCTION_LINES: usize = 100;

/// Every function of `files` longer than [`MAX_FUNCTION_LINES`], as `file:line: name (n lines)`.
/// A function ends at the first `}` line indented as its `fn` line (rustfmt's layout).
fn long_functions(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            let indent = &line[..line.len() - code.len()];
            let after_vis = code
                .strip_prefix("pub ")
                .or_else(|| code.strip_prefix("pub(crate) "))
                .or_else(|| code.strip_prefix("pub(super) "))
                .or_else(|| code.split_once(") ").filter(|(v, _)| v.starts_with("pub(in ")).map(|(_, r)| r))
                .unwrap_or(code);
            let after_async = after_vis.strip_prefix("async ").unwrap_or(after_vis);
            let Some(rest) = after_async.strip_prefix("fn ") else { continue };
            if line.trim_end().ends_with(';') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
                let n = end + 2;
                if n > MAX_FUNCTION_LINES {
                    found.push(format!("gateway/{rel}:{}: {name} ({n} lines)", i + 1));
                }
            }
        }
    }
    found
}

#[test]
fn no_function_over_a_hundred_lines() {
    let found = long_functions(&gateway_sources());
    assert!(found.is_empty(), "functions over {MAX_FUNCTION_LINES} lines:\n{}", found.join("\n"));
    // And the check sees one: a function of 101 lines is reported.
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES - 1);
    let long = vec![("x.rs".to_owned(), format!("//! X.\npub async fn big() {{\n{body}}}\n"))];
    assert_eq!(long_functions(&long), ["gateway/x.rs:2: big (101 lines)"]);
}

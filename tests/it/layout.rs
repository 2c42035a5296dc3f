//! The layout of `src/` holds (docs/ARCHITECTURE.md): only `src/redis/` and `lib.rs` touch
//! Redis's API, `src/core/` is pure and self-contained, nothing imports upward, and no two
//! files import each other in a circle. It reads the sources: what it checks is what a
//! reviewer would grep for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file of `src/` by module path (`core::outbox`; `lib.rs` is ""), without its unit
/// tests and comments.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let module = rel
                .to_str()
                .unwrap()
                .trim_end_matches("mod")
                .trim_end_matches('/')
                .replace('/', "::");
            let module = if module == "lib" {
                String::new()
            } else {
                module
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(module, code);
        }
    }
    assert!(out.len() > 20, "src/ not found at {}", root.display());
    out
}

/// The files a file imports: every `crate::…` path, and each name of a `use crate::x::{…}`
/// group, resolved to the longest module path that is a file.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].join("::"))
            .find(|m| files.contains_key(m))
    };
    let mut out = BTreeMap::new();
    for (module, code) in files {
        let mut deps = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            deps.extend(resolve(path));
            // `use crate::a::{b, c}`: each of b and c may be a file of its own.
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map_or(end, |j| end + j)];
                for item in group.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("");
                    let name = name.split_whitespace().next().unwrap_or("");
                    if !name.is_empty() && name != "self" {
                        deps.extend(resolve(&format!("{path}::{name}")));
                    }
                }
            }
        }
        deps.remove(module);
        // A folder's mod.rs declaring its children is not an import of them.
        deps.retain(|d| module.is_empty() || !d.starts_with(&format!("{module}::")));
        out.insert(module.clone(), deps);
    }
    out
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn only_the_redis_shell_and_lib_rs_touch_the_redis_api() {
    for (module, code) in sources() {
        if module.is_empty() || layer(&module) == "redis" {
            continue;
        }
        for word in ["redis_module", "raw::", "extern \"C\""] {
            assert!(!code.contains(word), "{module} mentions {word}");
        }
    }
}

#[test]
fn the_core_is_pure_and_imports_only_the_core() {
    let files = sources();
    for (module, code) in &files {
        if layer(module) != "core" {
            continue;
        }
        for word in [
            "std::thread",
            "std::net",
            "libc::",
            "socket2",
            "rustls",
            "parking_lot",
        ] {
            assert!(!code.contains(word), "{module} uses {word}");
        }
    }
    for (module, deps) in imports(&files) {
        if layer(&module) == "core" {
            for dep in deps {
                assert_eq!(layer(&dep), "core", "{module} imports {dep}");
            }
        }
    }
}

#[test]
fn nothing_imports_upward() {
    let rank = |l: &str| match l {
        "core" => 0,
        "amqp" | "state" => 1,
        "publisher" => 2,
        "redis" => 3,
        _ => 4,
    };
    for (module, deps) in imports(&sources()) {
        for dep in deps {
            let (from, to) = (layer(&module), layer(&dep));
            assert!(
                rank(to) <= rank(from) && !(rank(from) == 1 && from != to && rank(to) == 1),
                "{module} ({from}) imports {dep} ({to})"
            );
        }
    }
}

#[test]
fn no_circle_of_imports_between_files() {
    let graph = imports(&sources());
    // Depth-first search; a file met again while on the path closes a circle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import circle: {}", path[at..].join(" → ") + " → " + m);
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for dep in graph.get(m).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_sees_imports() {
    // Guards the tests above against a parser that finds nothing.
    let graph = imports(&sources());
    let step = &graph["redis::step"];
    for dep in [
        "redis::hook",
        "redis::runtime",
        "core::outbox",
        "state::stats",
    ] {
        assert!(
            step.contains(dep),
            "redis::step should import {dep}: {step:?}"
        );
    }
    assert!(graph["publisher::session"].contains("amqp::connection"));
}

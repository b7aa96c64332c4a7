//! The API document against the router: every route the server serves, with every method it answers, is
//! in `/api/v1/openapi.json`, and nothing is there that is not served. The methods are the server's own:
//! a request with a method no route takes (`PATCH`) is answered 405 with `Allow`, which lists them.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::server::Server;

/// A concrete URL path for a route's pattern (`{key}` → `x`).
fn concrete(pattern: &str) -> String {
    pattern.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/")
}

async fn document(s: &Server) -> Value {
    let r = s.http.get(format!("{}/api/v1/openapi.json", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the document needs no token");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    r.json().await.unwrap()
}

/// The methods the server answers on `pattern`, from its `Allow` header.
async fn served_methods(s: &Server, pattern: &str) -> BTreeSet<String> {
    let r = s.http.request(Method::PATCH, format!("{}{}", s.url, concrete(pattern))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{pattern}: no route takes PATCH");
    let allow = r.headers().get("allow").unwrap_or_else(|| panic!("{pattern}: a 405 says what is allowed"));
    allow
        .to_str()
        .unwrap()
        .split(',')
        .map(|m| m.trim().to_lowercase())
        .filter(|m| !m.is_empty() && m != "head") // axum answers HEAD wherever it answers GET
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_and_method_is_in_the_document_and_nothing_else() {
    let s = Server::start(0, Default::default()).await;
    let doc = document(&s).await;
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, ops)| (path.clone(), ops.as_object().unwrap().keys().cloned().collect()))
        .collect();
    let mut served = BTreeMap::new();
    for pattern in sluice_server::served_paths() {
        served.insert(pattern.to_string(), served_methods(&s, pattern).await);
    }
    assert!(served.len() >= 40, "the table lists the routes: {served:?}");
    let missing: Vec<String> = served
        .iter()
        .flat_map(|(p, ms)| {
            ms.iter().filter(|m| !documented.get(p).is_some_and(|d| d.contains(*m))).map(move |m| format!("{m} {p}"))
        })
        .collect();
    assert!(missing.is_empty(), "served but not in the API document: {missing:?}");
    let unserved: Vec<String> = documented
        .iter()
        .flat_map(|(p, ms)| {
            ms.iter().filter(|m| !served.get(p).is_some_and(|s| s.contains(*m))).map(move |m| format!("{m} {p}"))
        })
        .collect();
    assert!(unserved.is_empty(), "in the API document but not served: {unserved:?}");
}

/// OpenAPI 3.1; every operation says what success looks like, what it refuses, and (unless it is public)
/// which credentials it takes; every error it may answer has the error body's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_has_its_answers_errors_and_credentials() {
    let s = Server::start(0, Default::default()).await;
    let doc = document(&s).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let public = ["/", "/ui/app.js", "/ui/app.css", "/ui/login", "/ui/session", "/ui/logout", "/healthz", "/readyz"];
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let answers = op["responses"].as_object().unwrap();
            assert!(answers.keys().any(|c| c.starts_with('2')), "{method} {path} documents no success");
            // `/readyz` answers 503 with its own report: what a load balancer and a person read.
            let errors =
                answers.iter().filter(|(c, _)| path != "/readyz" && (c.starts_with('4') || c.starts_with('5')));
            for (code, answer) in errors {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                assert!(
                    schema == "#/components/schemas/ApiError" || schema == "#/components/schemas/OfrepError",
                    "{method} {path} {code}: an error body is ApiError or OfrepError, not {answer}"
                );
            }
            if path.starts_with("/api/v1/") && !public.contains(&path.as_str()) && path != "/api/v1/openapi.json" {
                assert!(answers.contains_key("401"), "{method} {path} takes a token and must say 401");
                let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {path}: no security"));
                assert!(!security.is_empty() && security.iter().all(|s| !s.as_object().unwrap().is_empty()));
            }
        }
    }
    assert!(operations >= 45, "{operations} operations");
    for scheme in ["bearer", "apiKey", "unleash"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }
}

/// `docs/api.md`'s table of operations is the document's own, rendered: it cannot fall behind the code.
/// `SLUICE_WRITE_DOCS=1` rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_table_of_operations_is_the_documents() {
    let s = Server::start(0, Default::default()).await;
    let doc = document(&s).await;
    let mut rows =
        vec!["| method | path | tag | credentials | answers |".to_string(), "|---|---|---|---|---|".to_string()];
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let credentials: Vec<String> = op["security"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|s| s.as_object().unwrap().keys().next().cloned().unwrap_or_else(|| "none".into()))
                        .collect()
                })
                .unwrap_or_else(|| vec!["none".into()]);
            let answers: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            let answers: Vec<&str> = answers.iter().map(|a| a.as_str()).collect();
            rows.push(format!(
                "| {} | `{path}` | {} | {} | {} |",
                method.to_uppercase(),
                op["tags"][0].as_str().unwrap_or(""),
                credentials.join(", "),
                answers.join(" ")
            ));
        }
    }
    let table = rows.join("\n");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    let (begin, end) = ("<!-- operations: begin -->", "<!-- operations: end -->");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once(begin).expect("docs/api.md has the operations markers");
    let (published, tail) = rest.split_once(end).expect("the end marker");
    if std::env::var("SLUICE_WRITE_DOCS").is_ok() {
        std::fs::write(&path, format!("{head}{begin}\n{table}\n{end}{tail}")).unwrap();
    } else {
        assert_eq!(
            published.trim(),
            table,
            "docs/api.md differs from the API document: SLUICE_WRITE_DOCS=1 rewrites it"
        );
    }
}

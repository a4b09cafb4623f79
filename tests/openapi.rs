//! `/openapi.json` and the reference page: the document lists every route of the router and
//! nothing it does not serve, passes `openapi-spec-validator` (PyPI, pinned in
//! `tests/openapi-validator/requirements.txt`), and real answers of both APIs match the schemas
//! it states; `/docs` works offline.

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::*;

/// The document of a running gateway.
async fn document(gw: &TestGateway) -> Value {
    let r = gw.http.get(format!("{}/openapi.json", gw.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Every route of the router's table is in the document with a summary, a success answer and
/// a refusal; and every operation of the document is served: a request with made-up ids gets
/// an answer from a handler (a 401, a 404 naming the resource, ...), never the router's own
/// "no such route" or 405. Svix's paths also answer with a trailing slash.
#[tokio::test]
async fn the_document_and_the_router_list_the_same_routes() {
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let doc = document(&gw).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let table = hookgate::http::operations();
    assert!(table.len() > 70, "{}", table.len());
    let mut in_doc = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        in_doc += item.as_object().unwrap().len();
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            assert!(op["responses"]["4XX"].is_object(), "{method} {path}");
            assert!(table.iter().any(|o| o.path == path && o.method == method), "{method} {path} not in the table");
            let concrete = path.replace(['{', '}'], "x");
            let mut paths = vec![concrete.clone()];
            if path.starts_with("/api/v1/") {
                paths.push(format!("{concrete}/"));
            }
            for p in paths {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let r = gw.http.request(m, format!("{}{p}", gw.base)).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert!(status != 405 && !body.contains("no such route"), "{method} {p}: {status} {body}");
            }
        }
    }
    assert_eq!(in_doc, table.len(), "one operation per route of the table");
    gw.stop().await.unwrap();
}

/// The document is valid OpenAPI 3.1 by an independent validator from the registries.
#[tokio::test]
async fn the_document_passes_an_openapi_validator() {
    let Some(python) =
        venv_python(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi-validator"), "openapi_spec_validator")
    else {
        return;
    };
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let file = path_in(&dir, "openapi.json");
    std::fs::write(&file, document(&gw).await.to_string()).unwrap();
    gw.stop().await.unwrap();
    let out = std::process::Command::new(python).args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("OK"), "{text}");

    // The validator does fail a broken document, so its OK means something.
    let mut broken: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    broken["paths"]["/v1/events"]["post"]["responses"] = json!("none");
    std::fs::write(&file, broken.to_string()).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi-validator/.venv/bin/python");
    let out = std::process::Command::new(python).args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(!out.status.success(), "a broken document passed");
}

/// Checks an answer against the document: the schema of `status` (or of `4XX`) for the
/// operation `method template`.
fn conforms(doc: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let responses = &doc["paths"][template][method]["responses"];
    let response = responses.get(status.to_string()).unwrap_or(&responses["4XX"]);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {template} documents no JSON answer for {status}");
    // The whole document is the root, so `#/components/schemas/...` resolves.
    let mut root = json!({"$ref": schema["$ref"], "components": doc["components"]});
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {template} {status}: {errors:?}\n{body}");
}

/// Real answers of the native and the Svix API, successes and refusals, match the document's
/// schemas.
#[tokio::test]
async fn answers_match_the_documented_schemas() {
    let mut rx = Receiver::start(Behavior::Status(200)).await;
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let doc = document(&gw).await;
    let check =
        |method: &str, template: &str, status: u16, body: &Value| conforms(&doc, method, template, status, body);

    let (s, t) = gw.send_json(Method::POST, "/v1/tenants", &json!({"id": "acme", "name": "Acme"})).await;
    check("post", "/v1/tenants", s, &t);
    let (s, e) = gw
        .send_json(Method::POST, "/v1/tenants/acme/endpoints", &json!({"url": rx.url("/a"), "triggers": ["*"]}))
        .await;
    check("post", "/v1/tenants/{id}/endpoints", s, &e);
    let (s, e) = gw.send_json(Method::POST, "/v1/endpoints", &json!({"url": rx.url("/d"), "triggers": ["*"]})).await;
    check("post", "/v1/endpoints", s, &e);
    let ep = e["id"].as_str().unwrap().to_owned();
    let (s, r) = gw.ingest(&state_change("b")).await;
    check("post", "/v1/events", s, &r);
    rx.next(std::time::Duration::from_secs(15)).await;
    let delivery = gw.delivery_ids(r["event_id"].as_str().unwrap()).await.remove(0);
    gw.settled(&delivery, std::time::Duration::from_secs(15)).await;
    for (template, path) in [
        ("/v1/events/{id}", format!("/v1/events/{}", r["event_id"].as_str().unwrap())),
        ("/v1/deliveries", "/v1/deliveries".to_owned()),
        ("/v1/deliveries/{id}", format!("/v1/deliveries/{delivery}")),
        ("/v1/endpoints", "/v1/endpoints".to_owned()),
        ("/v1/endpoints/{id}", format!("/v1/endpoints/{ep}")),
        ("/v1/tenants", "/v1/tenants".to_owned()),
        ("/v1/tenants/{id}", "/v1/tenants/acme".to_owned()),
        ("/v1/tenants/{id}/tokens", "/v1/tenants/acme/tokens".to_owned()),
        ("/v1/stats", "/v1/stats".to_owned()),
        ("/v1/stats/overview", "/v1/stats/overview".to_owned()),
        ("/healthz", "/healthz".to_owned()),
        ("/v1/deliveries/{id}", "/v1/deliveries/nope".to_owned()),
        ("/v1/deliveries", "/v1/deliveries?limit=x".to_owned()),
    ] {
        let (s, b) = gw.get(&path).await;
        check("get", template, s, &b);
    }
    for (method, template, path, body) in [
        ("post", "/v1/deliveries/{id}/resend", format!("/v1/deliveries/{delivery}/resend"), json!({})),
        ("post", "/v1/endpoints/{id}/secret/rotate", format!("/v1/endpoints/{ep}/secret/rotate"), json!({})),
        ("post", "/v1/tenants/{id}/tokens", "/v1/tenants/acme/tokens".to_owned(), json!({})),
        ("post", "/v1/tenants/{id}/portal", "/v1/tenants/acme/portal".to_owned(), json!({})),
        ("post", "/v1/tenants/{id}/secret/reveal", "/v1/tenants/acme/secret/reveal".to_owned(), json!({})),
        ("patch", "/v1/endpoints/{id}", format!("/v1/endpoints/{ep}"), json!({"colour": "red"})),
        ("post", "/api/v1/app", "/api/v1/app".to_owned(), json!({"name": "Globex", "uid": "globex"})),
        ("post", "/api/v1/app/{app}/endpoint", "/api/v1/app/globex/endpoint".to_owned(), json!({"url": rx.url("/s")})),
        ("post", "/api/v1/event-type", "/api/v1/event-type".to_owned(), json!({"name": "a.b", "description": "x"})),
        (
            "post",
            "/api/v1/app/{app}/msg",
            "/api/v1/app/globex/msg".to_owned(),
            json!({"eventType": "a.b", "payload": {"n": 1}}),
        ),
        ("post", "/api/v1/app/{app}/msg", "/api/v1/app/globex/msg".to_owned(), json!({"payload": {}})),
        ("post", "/api/v1/auth/app-portal-access/{app}", "/api/v1/auth/app-portal-access/globex".to_owned(), json!({})),
    ] {
        let (s, b) = gw.send_json(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &path, &body).await;
        check(method, template, s, &b);
    }
    let msg = {
        let (_, page) = gw.get("/api/v1/app/globex/msg").await;
        check("get", "/api/v1/app/{app}/msg", 200, &page);
        page["data"][0]["id"].as_str().unwrap().to_owned()
    };
    rx.next(std::time::Duration::from_secs(15)).await;
    let (_, eps) = gw.get("/api/v1/app/globex/endpoint").await;
    let sep = eps["data"][0]["id"].as_str().unwrap().to_owned();
    for (template, path) in [
        ("/api/v1/app", "/api/v1/app".to_owned()),
        ("/api/v1/app/{app}", "/api/v1/app/globex".to_owned()),
        ("/api/v1/app/{app}/endpoint", "/api/v1/app/globex/endpoint".to_owned()),
        ("/api/v1/app/{app}/endpoint/{endpoint}", format!("/api/v1/app/globex/endpoint/{sep}")),
        ("/api/v1/app/{app}/endpoint/{endpoint}/secret", format!("/api/v1/app/globex/endpoint/{sep}/secret")),
        ("/api/v1/app/{app}/msg/{msg}", format!("/api/v1/app/globex/msg/{msg}")),
        ("/api/v1/app/{app}/attempt/endpoint/{endpoint}", format!("/api/v1/app/globex/attempt/endpoint/{sep}")),
        ("/api/v1/event-type", "/api/v1/event-type".to_owned()),
        ("/api/v1/event-type/{name}", "/api/v1/event-type/a.b".to_owned()),
        ("/api/v1/app/{app}", "/api/v1/app/nope".to_owned()),
    ] {
        let (s, b) = gw.get(&path).await;
        check("get", template, s, &b);
    }
    let attempts = eventually(std::time::Duration::from_secs(15), || async {
        let (_, b) = gw.get(&format!("/api/v1/app/globex/attempt/msg/{msg}")).await;
        (b["data"].as_array().is_some_and(|a| !a.is_empty())).then_some(b)
    })
    .await;
    check("get", "/api/v1/app/{app}/attempt/msg/{msg}", 200, &attempts);
    gw.stop().await.unwrap();
}

/// `/docs` is a page whose every asset is served by the gateway itself (it works offline), and
/// its script reads `/openapi.json`.
#[tokio::test]
async fn the_reference_page_is_self_contained() {
    let dir = temp_dir();
    let gw = TestGateway::start(&base_config(dir.path())).await;
    let page = gw.http.get(format!("{}/docs", gw.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("http"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere: {html}");
    assert!(html.contains(r#"<script src="/docs/reference.js">"#), "{html}");
    let js = gw.http.get(format!("{}/docs/reference.js", gw.base)).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    let js = js.text().await.unwrap();
    assert!(js.contains(r#"fetch("/openapi.json")"#) && !js.contains("https://"), "{js}");
    gw.stop().await.unwrap();
}

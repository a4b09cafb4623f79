//! The OpenAPI 3.1 document of the HTTP surface, built from the router's own route table.
//!
//! Owns: `Op`, what a route says about itself (tag, summary, who may call it, its body and
//! answer, its query parameters), and `document`, which turns the table `http.rs` routes from
//! into the document served at `/openapi.json`. Path parameters come from the path itself, the
//! error answers from the API a route belongs to (native `{error}` or Svix's `{code, detail}`),
//! the body and answer schemas from `schemas.rs`. Because the router is built from the same
//! table, a route cannot exist without an entry here.
//! Must not touch: handlers or the router: this is a pure description, built once at start.
//!
//! Why utoipa's model rather than its derive macros (or aide): the handlers read their bodies
//! as JSON by hand so that a refusal can name the key and say what it expected, so there are no
//! request types to derive from; utoipa's types give the document its 3.1 shape, and
//! `schemas.rs` states each body once, checked against real answers by the test suite.

mod schemas;

use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
    ResponseBuilder, ResponsesBuilder,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (health, metrics, the dashboard's static files).
    Open,
    /// The admin token (Svix's organisation token on `/api/v1`).
    Admin,
    /// The ingest token (or the admin token).
    Ingest,
    /// The admin token or the tenant's own token (Svix: the application's token).
    Tenant,
    /// A one-time portal code in the body.
    PortalCode,
}

/// One route's description: `http.rs` fills `method` and `path` from the route itself.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The request body's component schema (JSON).
    pub body: Option<&'static str>,
    /// The success status and its component schema (`None`: no body).
    pub ok: (u16, Option<&'static str>),
    /// The success answer's media type.
    pub media: &'static str,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
}

/// A route's description with a `200` JSON answer of schema `answer`.
pub fn op(tag: &'static str, summary: &'static str, auth: Auth, answer: &'static str) -> Op {
    Op {
        method: "",
        path: "",
        tag,
        summary,
        auth,
        body: None,
        ok: (200, Some(answer)),
        media: "application/json",
        query: &[],
    }
}

impl Op {
    /// Takes a JSON body of component schema `schema`.
    pub fn body(self, schema: &'static str) -> Op {
        Op { body: Some(schema), ..self }
    }

    /// Answers `status` with a body of `schema`, or none.
    pub fn ok(self, status: u16, schema: Option<&'static str>) -> Op {
        Op { ok: (status, schema), ..self }
    }

    /// Answers in `media` rather than JSON.
    pub fn media(self, media: &'static str) -> Op {
        Op { media, ..self }
    }

    /// Reads these query parameters.
    pub fn query(self, query: &'static [(&'static str, &'static str)]) -> Op {
        Op { query, ..self }
    }

    /// Whether this is a route of the Svix-compatible API.
    pub fn is_svix(&self) -> bool {
        self.path.starts_with("/api/v1/")
    }
}

/// The tags, in the order the reference page shows them, with what each covers.
const TAGS: &[(&str, &str)] = &[
    ("Events", "Ingest: a producer's events, committed before the answer."),
    ("Delivery log", "Deliveries and their attempts, searched and resent."),
    ("Endpoints", "Endpoints created at runtime, their health and secrets."),
    ("Tenants", "Customers with their own secret, endpoints, log, tokens and portal."),
    ("Charts", "Success, failure, retry and latency series, and the overview."),
    ("Operations", "Health, metrics, reload, the dashboard and this reference."),
    ("Svix: applications", "Svix's applications, which are Hookgate's tenants."),
    ("Svix: endpoints", "Svix's endpoints of an application."),
    ("Svix: messages", "Svix's messages, delivered exactly as sent."),
    ("Svix: attempts", "Svix's message attempts and resends."),
    ("Svix: event types", "Svix's event types, with JSON Schemas."),
    ("Svix: authentication", "Svix's app portal access."),
];

/// The document of these routes.
pub fn document(ops: &[Op]) -> OpenApi {
    let mut paths = Paths::new();
    for o in ops {
        paths.add_path_operation(o.path, vec![method(o.method)], operation(o));
    }
    let bearer = |what: &str| {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(what.to_owned());
        SecurityScheme::Http(http)
    };
    let mut components = ComponentsBuilder::new()
        .security_scheme("admin", bearer("`[server] admin_token`; Svix's organisation token on /api/v1."))
        .security_scheme("ingest", bearer("`[server] ingest_token`, or the admin token."))
        .security_scheme("tenant", bearer("A tenant's token (portal sessions and Svix application tokens too)."));
    for (name, schema) in schemas::all() {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Hookgate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A self-hosted webhook delivery gateway: its own API under /v1 and a Svix-compatible one \
                     under /api/v1. Every native error is {\"error\": {\"code\", \"message\"}}; every Svix \
                     one {\"code\", \"detail\"}.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(TAGS.iter().map(|(name, about)| TagBuilder::new().name(*name).description(Some(*about)).build())))
        .build()
}

fn method(m: &str) -> HttpMethod {
    match m {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "patch" => HttpMethod::Patch,
        "delete" => HttpMethod::Delete,
        other => panic!("no OpenAPI method for route method {other:?}"),
    }
}

fn schema_ref(name: &str) -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn operation(o: &Op) -> utoipa::openapi::path::Operation {
    let id = format!("{}{}", o.method, o.path.replace(['/', '{', '}', '-'], "_"));
    let mut b = OperationBuilder::new().tag(o.tag).summary(Some(o.summary)).operation_id(Some(id));
    for name in o.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
        b = b.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schemas::string())),
        );
    }
    for (name, about) in o.query {
        b = b.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*about))
                .schema(Some(schemas::string())),
        );
    }
    if let Some(body) = o.body {
        let content = ContentBuilder::new().schema(Some(schema_ref(body))).build();
        b = b.request_body(Some(
            RequestBodyBuilder::new().content("application/json", content).required(Some(Required::True)).build(),
        ));
    }
    let (status, answer) = o.ok;
    let mut ok = ResponseBuilder::new().description(reason(status));
    if let Some(schema) = answer {
        ok = ok.content(o.media, ContentBuilder::new().schema(Some(schema_ref(schema))).build());
    }
    let mut responses = ResponsesBuilder::new().response(status.to_string(), ok.build());
    let error = if o.is_svix() { "SvixError" } else { "Error" };
    let refusal = ResponseBuilder::new()
        .description("Refused: the status says why, the body names the problem.")
        .content("application/json", ContentBuilder::new().schema(Some(schema_ref(error))).build())
        .build();
    responses = responses.response("4XX", refusal);
    b = b.responses(responses.build());
    for scheme in schemes(o.auth) {
        b = b.security(SecurityRequirement::new(*scheme, Vec::<String>::new()));
    }
    b.build()
}

/// The security schemes any one of which lets a caller in.
fn schemes(auth: Auth) -> &'static [&'static str] {
    match auth {
        Auth::Open | Auth::PortalCode => &[],
        Auth::Admin => &["admin"],
        Auth::Ingest => &["ingest", "admin"],
        Auth::Tenant => &["admin", "tenant"],
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted: committed durably before this answer.",
        204 => "Done; no body.",
        _ => "Success",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema an operation names is in the components, and every path parameter is
    /// declared: a typo in the route table fails here rather than in a client.
    #[test]
    fn every_named_schema_exists() {
        let names: Vec<&str> = schemas::all().into_iter().map(|(n, _)| n).collect();
        let ops = [
            op("Events", "x", Auth::Ingest, "EventAccepted").body("EventIn"),
            Op { method: "get", path: "/v1/x/{id}", ..op("Delivery log", "y", Auth::Admin, "Delivery") },
        ];
        for o in &ops {
            for s in o.body.iter().chain(o.ok.1.iter()) {
                assert!(names.contains(s), "{s}");
            }
        }
        let doc: serde_json::Value = serde_json::from_str(
            &document(&[Op { method: "get", path: "/v1/x/{id}", ..op("Delivery log", "y", Auth::Admin, "Delivery") }])
                .to_json()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let get = &doc["paths"]["/v1/x/{id}"]["get"];
        assert_eq!(get["parameters"][0]["name"], "id");
        assert_eq!(
            get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Delivery"
        );
        assert_eq!(get["security"], serde_json::json!([{"admin": []}]));
    }
}

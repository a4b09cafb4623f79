//! The configuration rules, each checked through `Config::parse` on small files.

use super::*;

const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = |name: &str| (name == "HOOK_TOKEN").then(|| "from-env".to_owned());
    Config::parse(text, "test.toml", Path::new("/etc/hookgate"), &env)
}

fn minimal(extra: &str) -> String {
    format!("[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"{SECRET}\"\n{extra}")
}

#[test]
fn defaults_fill_every_key() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.data_dir, Path::new("/etc/hookgate/data"));
    assert_eq!(c.server.max_body_bytes, 262_144);
    assert_eq!(c.server.cache_size, 64 << 20);
    assert_eq!(c.delivery.timeout, Duration::from_secs(10));
    assert_eq!(c.delivery.retry.max_retries, 3);
    assert_eq!(c.delivery.retry.initial, Duration::from_secs(5));
    assert_eq!(c.delivery.retry.max, Duration::from_secs(3600));
    assert_eq!(c.delivery.max_in_flight, 512);
    assert_eq!(c.delivery.max_in_flight_per_endpoint, 32);
    assert!(!c.delivery.allow_http && !c.delivery.allow_private_networks);
    assert_eq!(c.delivery.breaker_failures, 10);
    assert_eq!(c.delivery.breaker_cooldown, Duration::from_secs(30));
    assert_eq!(c.delivery.disable_after, Some(Duration::from_secs(5 * 86_400)));
    assert_eq!(c.retention.deliveries, Duration::from_secs(30 * 86_400));
    assert_eq!(c.retention.idempotency, Duration::from_secs(86_400));
    assert_eq!(c.operations_endpoint, None);
    let c = parse(&minimal("[delivery]\ndisable_after = \"0s\"")).unwrap();
    assert_eq!(c.delivery.disable_after, None);
}

/// The keys of the operations issue: each bad value names its key and line, and nothing
/// is half-applied (the whole load fails).
#[test]
fn health_retention_and_ordering_keys_are_checked() {
    let ep = "[[endpoints]]\nid = \"a\"\nurl = \"https://example.com/h\"\ntriggers = [\"*\"]\n";
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (minimal("[retention]\ndeliveries = \"-1d\""), "retention.deliveries", 6, "not a duration"),
        (minimal("[retention]\ndeliveries = \"100000d\""), "retention.deliveries", 6, "must be from"),
        (minimal("[retention]\nidempotency = \"0s\""), "retention.idempotency", 6, "greater than zero"),
        (minimal("[retention]\nforever = true"), "retention.forever", 6, "unknown field"),
        (minimal("[delivery]\nbreaker_failures = 0"), "delivery.breaker_failures", 6, "out of range"),
        (minimal("[delivery]\ndisable_after = \"1000d\""), "delivery.disable_after", 6, "at most 365d"),
        (minimal("[delivery]\nbreaker_cooldown = \"2d\""), "delivery.breaker_cooldown", 6, "must be from"),
        (minimal("[operations]\nendpoint = \"nope\""), "operations.endpoint", 6, "not the id"),
        (minimal(&format!("{ep}rate_limit = \"50/h\"\n")), "endpoints[0].rate_limit", 9, "N/s or N/m"),
        (minimal(&format!("{ep}rate_limit = \"fast\"\n")), "endpoints[0].rate_limit", 9, "N/s or N/m"),
        (minimal(&format!("{ep}ordering_key = \"bot_id\"\n")), "endpoints[0].ordering_key", 9, "fifo"),
        (minimal(&format!("{ep}ordering = \"random\"\n")), "endpoints[0].ordering", 9, "not an ordering"),
    ];
    for (text, key, line, needle) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}\n=> {e}");
        assert_eq!(e.line, Some(line), "{text}\n=> {e}");
        assert!(e.message.contains(needle), "{text}\n=> {e}");
    }
    let c = parse(&minimal(&format!(
        "[operations]\nendpoint = \"a\"\n{ep}rate_limit = \"50/s\"\nordering = \"fifo\"\nordering_key = \"bot_id\"\n"
    )))
    .unwrap();
    assert_eq!(c.operations_endpoint.as_deref(), Some("a"));
    assert_eq!(c.endpoints[0].rate_limit.unwrap().to_string(), "50/s");
    assert_eq!(c.endpoints[0].fifo.as_ref().unwrap().key.as_deref(), Some("bot_id"));
}

/// Days are 24 hours; jiff's longer spellings read too; units without a fixed length do not.
#[test]
fn durations_in_days_and_words() {
    assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * 86_400)));
    assert_eq!(parse_duration("1 hour 30 mins"), Some(Duration::from_secs(5_400)));
    for bad in ["1mo", "1y", "1d-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    for bad in ["", "10", "s", "10x", "1.5s", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn env_references_are_expanded() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(c.auth.ingest_tokens[0].0, "t");
    let c = parse(&minimal("").replace("[\"t\"]", "[\"${HOOK_TOKEN}\"]")).unwrap();
    assert_eq!(c.auth.ingest_tokens[0].0, "from-env");
    let e = parse(&minimal("").replace("[\"t\"]", "[\"${NOPE}\"]")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("auth.ingest_tokens", Some(2)));
    assert!(e.message.contains("NOPE"));
}

/// Each bad value is reported with the key and the line it sits on.
#[test]
fn errors_name_key_and_line() {
    let ep = "[[endpoints]]\nid = \"a\"\nurl = \"https://example.com/h\"\ntriggers = [\"bot.state_change\"]\n";
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (minimal("[delivery]\ntimeout = \"10x\""), "delivery.timeout", 6, "not a duration"),
        (minimal("[delivery]\nbogus = 1"), "delivery.bogus", 6, "unknown field"),
        (minimal("[delivery]\nmax_retries = \"x\""), "delivery.max_retries", 6, "invalid type"),
        (minimal("[delivery]\njitter = 1.5"), "delivery.jitter", 6, "out of range"),
        (minimal("[delivery]\nsignature_headers = [\"svx\"]"), "delivery.signature_headers", 6, "unknown header set"),
        (minimal("[delivery]\nsignature_headers = []"), "delivery.signature_headers", 6, "at least one"),
        (minimal(&ep.replace("https://example.com/h", "not a url")), "endpoints[0].url", 7, "not a valid URL"),
        (minimal(&ep.replace("https:", "http:")), "endpoints[0].url", 7, "http://"),
        (minimal(&ep.replace("[\"bot.state_change\"]", "[]")), "endpoints[0].triggers", 8, "at least one"),
        (minimal(&ep.replace("bot.state_change", "Bot State")), "endpoints[0].triggers", 8, "not a trigger"),
        (minimal(&format!("{ep}{ep}")), "endpoints[1].id", 10, "duplicate"),
    ];
    for (text, key, line, needle) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}\n=> {e}");
        assert_eq!(e.line, Some(line), "{text}\n=> {e}");
        assert!(e.message.contains(needle), "{text}\n=> {e}");
    }
}

#[test]
fn required_keys() {
    let e = parse(&format!("[signing]\nsecret = \"{SECRET}\"")).unwrap_err();
    assert_eq!(e.key, "auth.ingest_tokens");
    let e = parse("[auth]\ningest_tokens = [\"t\"]").unwrap_err();
    assert_eq!(e.key, "signing.secret");
    let e = parse("[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"c2hvcnQ=\"").unwrap_err();
    assert!(e.message.contains("at least 32"), "{e}");
}

#[test]
fn endpoints_with_match_and_warnings() {
    let c = parse(&minimal(
        "[[endpoints]]\nid = \"bot\"\nurl = \"https://10.0.0.1/h\"\ntriggers = [\"*\"]\nmatch = { bot_id = \"bot_1\", n = 3 }\n",
    ))
    .unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.triggers, Triggers::All);
    assert_eq!(e.matches.len(), 2);
    assert!(c.warnings.iter().any(|w| w.contains("private")), "{:?}", c.warnings);
    let e = parse(&minimal(
        "[[endpoints]]\nid = \"bot\"\nurl = \"https://a.example/h\"\ntriggers = [\"*\"]\nmatch = { trigger = \"x\" }\n",
    ))
    .unwrap_err();
    assert_eq!(e.key, "endpoints[0].match.trigger");
    // The API's rules, exactly: no floats, no empty match, each error on its line.
    for (m, key, needle) in [
        ("{ score = 1.5 }", "endpoints[0].match.score", "not a float"),
        ("{}", "endpoints[0].match", "at least one field"),
        ("{ when = 1979-05-27 }", "endpoints[0].match.when", "datetime"),
    ] {
        let e = parse(&minimal(&format!(
            "[[endpoints]]\nid = \"bot\"\nurl = \"https://a.example/h\"\ntriggers = [\"*\"]\nmatch = {m}\n"
        )))
        .unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn plugins_and_chains() {
    let text = minimal(
        "[[plugins]]\nname = \"only\"\npath = \"p/only.wasm\"\nconfig = { event_types = \"a,b\", n = 3 }\non_error = \"skip\"\ntimeout = \"20ms\"\nmemory_limit = \"8MiB\"\n\
         [triggers.\"bot.state_change\"]\nplugins = [\"only\"]\n\
         [[endpoints]]\nid = \"e\"\nurl = \"https://a.example/\"\ntriggers = [\"*\"]\nplugins = [\"only\"]\n",
    );
    let c = parse(&text).unwrap();
    let p = &c.plugins[0];
    assert_eq!(p.path, Path::new("/etc/hookgate/p/only.wasm"));
    assert_eq!(p.config, vec![("event_types".into(), "a,b".into()), ("n".into(), "3".into())]);
    assert_eq!((p.on_error, p.timeout, p.memory_limit), (OnError::Skip, Duration::from_millis(20), 8 << 20));
    assert_eq!(c.chain("bot.state_change", &c.endpoints[0]), ["only", "only"]);
    assert_eq!(c.chain("other", &c.endpoints[0]), ["only"]);

    let e = parse(&text.replace("plugins = [\"only\"]\n\n", "plugins = [\"nope\"]\n\n").replace(
        "[triggers.\"bot.state_change\"]\nplugins = [\"only\"]",
        "[triggers.\"bot.state_change\"]\nplugins = [\"nope\"]",
    ))
    .unwrap_err();
    assert!(e.message.contains("unknown plugin \"nope\""), "{e}");
    assert_eq!(e.key, "triggers.\"bot.state_change\".plugins");
    let e = parse(&text.replace("\"8MiB\"", "\"lots\"")).unwrap_err();
    assert_eq!(e.key, "plugins[0].memory_limit");
    let e = parse(&text.replace("\"skip\"", "\"ignore\"")).unwrap_err();
    assert_eq!(e.key, "plugins[0].on_error");
    assert_eq!(p.concurrency, crate::config::DEFAULT_PLUGIN_CONCURRENCY);
    let c = parse(&text.replace("memory_limit = \"8MiB\"\n", "memory_limit = \"8MiB\"\nconcurrency = 2\n")).unwrap();
    assert_eq!(c.plugins[0].concurrency, 2);
    let e =
        parse(&text.replace("memory_limit = \"8MiB\"\n", "memory_limit = \"8MiB\"\nconcurrency = 0\n")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("plugins[0].concurrency", Some(12)), "{e}");
    assert_eq!(parse_size("32MiB"), Some(32 << 20));
    assert_eq!(parse_size("2 GB"), Some(2_000_000_000));
    assert_eq!(parse_size("12 parsecs"), None);
}

#[test]
fn shipped_config_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = Config::load(&root.join("config/example.toml"), &|_| None).unwrap();
    assert!(!c.endpoints.is_empty());
}

#[test]
fn tenants_and_their_endpoints() {
    let t =
        "[[tenants]]\nid = \"acme\"\nsecret = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nmax_endpoints = 3\n";
    let ep = |tenant: &str| {
        format!(
            "[[endpoints]]\nid = \"hooks\"\nurl = \"https://a.example/\"\ntriggers = [\"*\"]\ntenant = \"{tenant}\"\n"
        )
    };
    // The same endpoint id in two tenants is two endpoints.
    let c = parse(&minimal(&format!("{t}{}{}", ep("acme"), ep("default")))).unwrap();
    let ids: Vec<&str> = c.endpoints.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["acme/hooks", "hooks"]);
    assert_eq!(c.endpoints[0].local_id(), "hooks");
    assert_eq!(c.tenants[0].limits.max_endpoints, 3);
    assert_eq!(c.tenants[0].limits.max_events_per_second, None, "from [tenants_defaults]");
    assert_eq!(c.signing.rotation_overlap, Duration::from_secs(86_400));
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (minimal(&format!("{t}{}{}", ep("acme"), ep("acme"))), "endpoints[1].id", 15, "duplicate"),
        (minimal(&ep("nobody")), "endpoints[0].tenant", 9, "not a tenant"),
        (minimal("[[tenants]]\nid = \"acme\"\n"), "tenants[0].secret", 6, "required"),
        (minimal("[[tenants]]\nid = \"default\"\nsecret = \"x\"\n"), "tenants[0].id", 6, "not \"default\""),
        (minimal(&format!("{t}{t}")), "tenants[1].id", 10, "duplicate"),
        (minimal("[tenants_defaults]\nmax_endpoints = 0\n"), "tenants_defaults.max_endpoints", 6, "out of range"),
        (minimal("rotation_overlap = \"0s\"\n"), "signing.rotation_overlap", 5, "greater than zero"),
        (minimal("[server]\npublic_url = \"ftp://x\"\n"), "server.public_url", 6, "http(s) URL"),
    ];
    for (text, key, line, needle) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}\n=> {e}");
        assert_eq!(e.line, Some(line), "{text}\n=> {e}");
        assert!(e.message.contains(needle), "{text}\n=> {e}");
    }
}

/// `[storage]`: redb by default; postgres needs a valid URL (from the environment here), whose
/// password never reaches an error or `Debug`; every bad value names its key and line.
#[test]
fn storage_backend_and_its_errors() {
    assert_eq!(parse(&minimal("")).unwrap().storage, StorageConfig::Redb);
    let pg = |extra: &str| minimal(&format!("[storage]\nbackend = \"postgres\"\n{extra}"));
    let c = parse(&pg(
        "postgres_url = \"postgres://u:hunter2@db:5432/hg?application_name=${HOOK_TOKEN}\"\nlease = \"10s\"",
    ))
    .unwrap();
    let StorageConfig::Postgres(p) = &c.storage else { panic!("{:?}", c.storage) };
    assert_eq!((p.pool, p.lease), (16, Duration::from_secs(10)));
    assert!(p.url.ends_with("application_name=from-env"), "env references are expanded");
    assert!(!format!("{c:?}").contains("hunter2"), "Debug hides the URL");

    let e = parse(&pg("")).unwrap_err();
    assert_eq!(e.key, "storage.postgres_url");
    assert!(e.message.contains("required"), "{e}");
    let e = parse(&pg("postgres_url = \"postgres://u:hunter2@db:notaport/hg\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("storage.postgres_url", Some(7)), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse(&pg("postgres_url = \"postgres://db/hg\"\nlease = \"1s\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("storage.lease", Some(8)), "{e}");
    let e = parse(&minimal("[storage]\nbackend = \"sqlite\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("storage.backend", Some(6)), "{e}");
}

/// `[server] log_format`: text by default, json on request, anything else named with its line.
#[test]
fn log_format() {
    assert_eq!(parse(&minimal("")).unwrap().server.log_format, LogFormat::Text);
    assert_eq!(parse(&minimal("[server]\nlog_format = \"json\"")).unwrap().server.log_format, LogFormat::Json);
    let e = parse(&minimal("[server]\nlog_format = \"xml\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("server.log_format", Some(6)), "{e}");
    assert!(e.message.contains("\"text\" or \"json\""), "{e}");
}

/// `[signing] secret` (and every other secret) may be an Ed25519 key, `whsk_`; a public key
/// (`whpk_`) is refused, naming the key and line.
#[test]
fn ed25519_secrets() {
    let key = crate::sign::Secret::generate_ed25519();
    let c = parse(&format!("[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"{}\"\n", key.to_whsec())).unwrap();
    assert_eq!(c.signing.secret, key);
    let public = key.public_key().unwrap();
    let e = parse(&format!("[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"{public}\"\n")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("signing.secret", Some(4)), "{e}");
    assert!(e.message.contains("public key"), "{e}");
}

//! `hookgate check`, `plugin run`, `plugin new` and `--help`, run as a user would run them.

use std::process::Command;

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate")).args(args).output().unwrap()
}

#[test]
fn check_accepts_the_example_and_summarises_it() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = hookgate(&["check", "--config", example]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("listen:   127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("local-receiver -> http://127.0.0.1:9000/webhooks triggers: *"), "{stdout}");
    assert!(stdout.contains("demo-bot") && stdout.contains("[match bot_id=\"bot_demo\"] rate 20/s fifo"), "{stdout}");
    assert!(stdout.contains("retention: deliveries 7d, idempotency keys 1d"), "{stdout}");
    assert!(stdout.contains("disable after 5d of failures") && stdout.contains("-> operations"), "{stdout}");
    // The secret never appears in output.
    assert!(!stdout.contains("ZXhhbXBsZS1zZWNyZXQ"), "{stdout}");
}

#[test]
fn check_rejects_a_bad_config_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n[delivery]\nbackoff_initial = \"soon\"\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:6"), "{stderr}");
    assert!(stderr.contains("delivery.backoff_initial"), "{stderr}");

    let out = hookgate(&["check", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// A secret in the wrong shape, or a password in an endpoint URL that came from the
/// environment, is named by key and line but never echoed.
#[test]
fn config_errors_never_echo_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base =
        "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";
    std::fs::write(&path, base.replace("ingest_tokens = [\"t\"]", "ingest_tokens = \"s3cret-ingest-token-0123\""))
        .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("c.toml:2") && stderr.contains("auth.ingest_tokens"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the token is never echoed: {stderr}");

    std::fs::write(&path, format!("{base}[[endpoints]]\nid = \"e\"\nurl = \"${{HOOK_URL}}\"\ntriggers = [\"*\"]\n"))
        .unwrap();
    for url in ["https://user:pa55word@hooks.example/x", "gopher://user:pa55word@hooks.example/x"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["check", "--config", path.to_str().unwrap()])
            .env("HOOK_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("url"), "{url}: {stderr}");
        assert!(!stderr.contains("pa55word"), "the URL's password is never echoed: {stderr}");
    }
}

#[test]
fn check_warns_about_literal_private_targets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
         [[endpoints]]\nid = \"meta\"\nurl = \"https://169.254.169.254/x\"\ntriggers = [\"*\"]\n",
    )
    .unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warning:") && stdout.contains("link-local"), "{stdout}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["plugin", "run", "--help"],
        &["plugin", "new", "--help"],
    ] {
        let out = hookgate(args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

/// A config with the example Rust plugins on `bot.state_change`, for `plugin run`.
fn workbench_config(dir: &std::path::Path, chain: &str, plugins: &str) -> std::path::PathBuf {
    let text = format!(
        "[server]\ndata_dir = \"{data}\"\n[auth]\ningest_tokens = [\"{ingest}\"]\nadmin_tokens = [\"{admin}\"]\n\
         [signing]\nsecret = \"{secret}\"\n{plugins}\n[triggers.\"bot.state_change\"]\nplugins = {chain}\n\
         [[endpoints]]\nid = \"slack\"\nurl = \"https://example.com/hook\"\ntriggers = [\"bot.state_change\"]\nplugins = [\"recall\"]\n",
        data = dir.join("data").display(),
        ingest = crate::util::INGEST_TOKEN,
        admin = crate::util::ADMIN_TOKEN,
        secret = crate::util::SECRET,
    );
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn plugin_tables() -> String {
    let t = |name: &str, krate: &str, extra: &str| {
        format!(
            "\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n",
            crate::util::wasm::plugin(krate).display()
        )
    };
    t("recordings", "only_event_types", "config = { event_types = \"post_processing_completed\" }")
        + &t("recall", "recall_envelope", "")
        + &t("trap", "guest_trap", "")
        + &t("chatty", "guest_hostile", "config = { mode = \"log-flood\", lines = \"3\", bytes = \"5\" }")
}

fn run_event(config: &std::path::Path, endpoint: Option<&str>, event: &serde_json::Value) -> (i32, String, String) {
    let dir = config.parent().unwrap();
    let event_path = dir.join("event.json");
    std::fs::write(&event_path, event.to_string()).unwrap();
    let mut args = vec!["plugin", "run", "--config", config.to_str().unwrap(), "--trigger", "bot.state_change"];
    if let Some(e) = endpoint {
        args.extend(["--endpoint", e]);
    }
    args.extend(["--event", event_path.to_str().unwrap()]);
    let out = hookgate(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `plugin run` prints each plugin's decision, time, memory and log lines and the body as it
/// would be signed, and its exit code is the verdict: 0 deliver, 1 filtered, 2 failed, 3 bad
/// input.
#[test]
fn plugin_run_shows_the_chain_and_exits_with_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let config = workbench_config(dir.path(), "[\"chatty\", \"recordings\"]", &plugin_tables());
    let ready = crate::util::state_change("bot_7");

    // Delivered to `slack`: the trigger's chain, then the endpoint's transform.
    let (code, out, err) = run_event(&config, Some("slack"), &ready);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chatty → recordings → recall"), "{out}");
    assert!(out.contains("[chatty] keep") && out.contains("log info: xxxxx"), "{out}");
    assert!(out.contains("[recordings] keep") && out.contains("[recall] replace"), "{out}");
    assert!(out.contains("memory") && out.contains(" ms"), "{out}");
    let body = out.lines().last().unwrap();
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["event"], "bot.done", "{out}");
    assert_eq!(hookgate::json::parse(body.as_bytes()).unwrap().to_canonical(), body, "the body is canonical");

    // Filtered by the trigger's chain, with the plugin's reason.
    let mut joined = ready.clone();
    joined["data"]["event_type"] = serde_json::json!("bot_joined_meeting");
    let (code, out, _) = run_event(&config, Some("slack"), &joined);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("result: filtered by \"recordings\"") && out.contains("bot_joined_meeting"), "{out}");

    // Failed: the trap's message, and no body.
    let config = workbench_config(dir.path(), "[\"trap\"]", &plugin_tables());
    let (code, out, _) = run_event(&config, None, &ready);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("result: failed in \"trap\"") && out.contains("asked to fail"), "{out}");

    // Bad input names the problem.
    let (code, _, err) = run_event(&config, Some("nope"), &ready);
    assert_eq!(code, 3);
    assert!(err.contains("no endpoint \"nope\""), "{err}");
    let (code, _, err) = run_event(&config, None, &serde_json::json!({"trigger": "other", "data": {}}));
    assert_eq!(code, 3);
    assert!(err.contains("--trigger"), "{err}");
}

/// `plugin new` writes a skeleton per language that builds with the language's own tooling and
/// that `plugin run` accepts: the sample event is kept, a changed one is dropped.
#[test]
fn plugin_new_skeletons_build_and_run_in_every_language() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut langs = vec!["rust"];
    // The JavaScript and Python toolchains are the ones the suite installs for the example
    // plugins; the skeletons reuse them rather than download them again.
    if crate::util::wasm::js_plugin("speaker_filter").is_some() {
        langs.push("js");
    }
    if crate::util::wasm::python_plugin("slack_state").is_some() {
        langs.push("python");
    }
    for lang in langs {
        let name = format!("my-{lang}");
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["plugin", "new", "--lang", lang, &name])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let plugin = dir.path().join(&name);
        let mut build = Command::new("bash");
        build.arg("build.sh").current_dir(&plugin);
        match lang {
            "js" => {
                std::os::unix::fs::symlink(root.join("plugins/js/node_modules"), plugin.join("node_modules")).unwrap()
            }
            "python" => std::os::unix::fs::symlink(root.join("plugins/python/.venv"), plugin.join(".venv")).unwrap(),
            _ => {
                // Share the example plugins' build directory: the same dependencies, built once.
                std::os::unix::fs::symlink(root.join("plugins/target"), plugin.join("target")).unwrap();
                crate::util::wasm::plugin("only_event_types");
                build.env_remove("CARGO_TARGET_DIR");
                build.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_BUILD_TARGET");
            }
        }
        let out = build.output().unwrap();
        assert!(
            out.status.success(),
            "{lang}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let config = plugin.join("hookgate.toml");
        let run = |event: &str| {
            let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
                .args(["plugin", "run", "--config", "hookgate.toml", "--trigger", "bot.state_change", "--event", event])
                .current_dir(&plugin)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (code, out) = run("event.json");
        assert_eq!(code, Some(0), "{lang}: {out}");
        assert!(out.contains(&format!("[{name}] keep")) && out.contains("new_state is"), "{lang}: {out}");
        let mut event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(plugin.join("event.json")).unwrap()).unwrap();
        event["data"]["new_state"] = serde_json::json!("joining");
        std::fs::write(plugin.join("joining.json"), event.to_string()).unwrap();
        let (code, out) = run("joining.json");
        assert_eq!(code, Some(1), "{lang}: {out}");
        assert!(out.contains("is not in"), "{lang}: {out}");
        assert!(config.exists());
    }
}

/// `serve --log-format json` (and `[server] log_format = "json"`) writes one JSON object per
/// line on stdout, for log shippers: the start line among them, with its level and fields.
#[test]
fn serve_logs_json_lines() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    for (flag, in_file) in [(true, false), (false, true)] {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = dir.path().join("json-log.toml");
        let format = if in_file { "log_format = \"json\"\n" } else { "" };
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data-{port}\"\n{format}[auth]\ningest_tokens = [\"t\"]\n\
                 [signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n"
            ),
        )
        .unwrap();
        let mut args = vec!["serve", "--config", path.to_str().unwrap()];
        if flag {
            args.extend(["--log-format", "json"]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        // The warnings come first (no endpoints, no main key), then the start line.
        for line in stdout.lines().take(10) {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
            let message = v["fields"]["message"].as_str().unwrap_or_default().to_owned();
            seen.push(message.clone());
            if message == "hookgate is serving" {
                assert_eq!(v["level"], "INFO", "{line}");
                assert_eq!(v["fields"]["listen"], format!("127.0.0.1:{port}"), "{line}");
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.iter().any(|m| m == "hookgate is serving"), "flag {flag}, file {in_file}: {seen:?}");
        assert!(seen.iter().any(|m| m.contains("no [[endpoints]]")), "the config's warnings are JSON too: {seen:?}");
    }
}

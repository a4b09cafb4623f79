//! The `hookgate` binary: parses the command line, loads the config, installs logging, binds the
//! listener and hands over to `hookgate::run`. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hookgate::Config;

#[derive(Parser)]
#[command(name = "hookgate", version, about = "Self-hosted webhook delivery gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config file (see config/default.toml for every key).
        #[arg(long, short)]
        config: PathBuf,
        /// Reload when the config file or a plugin's .wasm changes (as SIGHUP and
        /// POST /v1/admin/reload do).
        #[arg(long)]
        watch: bool,
        /// With [storage] backend = "postgres": do not apply the embedded migrations at start
        /// (refuse to start unless `hookgate migrate` has brought the schema up to date).
        #[arg(long)]
        no_migrate: bool,
        /// How to write the log to stdout: text, or json (one object per line, for log
        /// shippers). Overrides [server] log_format.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Apply the embedded PostgreSQL migrations ([storage] backend = "postgres"), then print
    /// the schema version. Safe to run from several nodes at once.
    Migrate {
        /// The TOML config file whose [storage] names the database.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a local webhook receiver that prints each delivery and whether both signatures verify.
    Listen {
        /// Port on 127.0.0.1.
        #[arg(long, short, default_value_t = 9000)]
        port: u16,
        /// The signing secret (base64, or whsec_<base64>), as in [signing] secret; or an
        /// Ed25519 secret key (whsk_<base64>) to check `v1a` signatures.
        #[arg(long, short)]
        secret: String,
    },
    /// Re-seal the endpoint and tenant secrets stored through the API under a new main key,
    /// read from the environment variable HOOKGATE_NEW_MAIN_KEY (32 bytes, base64). Stop the
    /// gateway (every node) first; then set [signing] main_key to the new key and start it.
    RotateMainKey {
        /// The TOML config file: its [storage] and its current [signing] main_key.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exits non-zero on error.
    Check {
        /// The TOML config file to validate.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Develop plugins: run an event through a chain, or start a new plugin.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run the chain an event would get, print each plugin's decision, time, memory and log,
    /// and the final body as it would be signed and sent. No store, no delivery. Exits 0 when
    /// the result is deliver, 1 when filtered, 2 when failed, 3 on a usage or config error.
    Run {
        /// The TOML config file that declares the plugins and chains.
        #[arg(long, short)]
        config: PathBuf,
        /// The event's trigger.
        #[arg(long, short)]
        trigger: String,
        /// Run the chain of a delivery to this endpoint (the trigger's chain, then the
        /// endpoint's); without it, only the trigger's chain.
        #[arg(long, short)]
        endpoint: Option<String>,
        /// The event as a producer would POST it: a JSON file, or `-` for stdin.
        #[arg(long)]
        event: PathBuf,
    },
    /// Write a ready-to-build plugin skeleton (source, WIT, build script, sample event and a
    /// config for `plugin run`) into ./<name>.
    New {
        /// rust, js or python.
        #[arg(long)]
        lang: String,
        /// The plugin's name (a-z, 0-9, '-', '_').
        name: String,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 3, not clap's 2: `plugin run` uses 0, 1 and 2 for its verdicts.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(3) } else { ExitCode::SUCCESS };
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    match cli.command {
        Command::Listen { port, secret } => listen_command(port, &secret),
        Command::Plugin { action } => plugin_command(action, &env),
        Command::RotateMainKey { config } => rotate_main_key(&config, &env),
        Command::Check { config } => check_command(&config, &env),
        Command::Migrate { config } => migrate_command(&config, &env),
        Command::Serve { config, watch, no_migrate, log_format } => {
            serve_command(&config, watch, no_migrate, log_format.as_deref(), &env)
        }
    }
}

/// `hookgate listen`.
fn listen_command(port: u16, secret: &str) -> ExitCode {
    let secret = match hookgate::sign::Secret::parse_any_length(secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --secret {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(hookgate::listen::run(port, secret)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `hookgate check`: the config, its plugins and (on PostgreSQL) the database's schema.
fn check_command(config: &std::path::Path, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    match Config::load(config, env) {
        Ok(c) => {
            // Plugins are compiled and matched against the WIT world too, so a missing or
            // incompatible component fails here, naming the plugin.
            if !c.plugins.is_empty()
                && let Err(e) = hookgate::plugin::PluginHost::load(&c.plugins, &c.server.data_dir)
            {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            print_summary(&c);
            // A PostgreSQL backend is reached too: a wrong URL, an unreachable server or a
            // schema this binary cannot read fail `check`, not the first `serve`.
            if let hookgate::config::StorageConfig::Postgres(pc) = &c.storage {
                let status = tokio::runtime::Runtime::new()
                    .map_err(|e| hookgate::store::StoreError::Storage(e.to_string()))
                    .and_then(|rt| rt.block_on(hookgate::store::pg::check(pc)));
                match status {
                    Ok(s) if s.version > hookgate::store::pg::SCHEMA_VERSION => {
                        eprintln!(
                            "error: the database has Hookgate schema version {}; this hookgate understands up to {}",
                            s.version,
                            hookgate::store::pg::SCHEMA_VERSION
                        );
                        return ExitCode::FAILURE;
                    }
                    Ok(s) => {
                        let note = if s.version == hookgate::store::pg::SCHEMA_VERSION {
                            "up to date".to_owned()
                        } else {
                            format!(
                                "needs `hookgate migrate` to reach {} (serve applies it at start)",
                                hookgate::store::pg::SCHEMA_VERSION
                            )
                        };
                        println!(
                            "  storage:  postgres (server {}), schema version {} ({note})",
                            s.server_version, s.version
                        );
                    }
                    Err(e) => {
                        eprintln!("error: storage.postgres_url: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `hookgate migrate`.
fn migrate_command(config: &std::path::Path, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let c = match Config::load(config, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hookgate::config::StorageConfig::Postgres(pc) = &c.storage else {
        eprintln!("error: {}: [storage] backend is \"redb\"; it needs no migrations", config.display());
        return ExitCode::FAILURE;
    };
    let applied = tokio::runtime::Runtime::new()
        .map_err(|e| hookgate::store::StoreError::Storage(e.to_string()))
        .and_then(|rt| rt.block_on(hookgate::store::pg::migrate(pc)));
    match applied {
        Ok(v) if v.is_empty() => {
            println!("schema version {}: up to date", hookgate::store::pg::SCHEMA_VERSION);
            ExitCode::SUCCESS
        }
        Ok(v) => {
            let list: Vec<String> = v.iter().map(i32::to_string).collect();
            println!(
                "applied migration(s) {}; schema version {}",
                list.join(", "),
                hookgate::store::pg::SCHEMA_VERSION
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `hookgate serve`.
fn serve_command(
    config: &std::path::Path,
    watch: bool,
    no_migrate: bool,
    log_format: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> ExitCode {
    let config = match Config::load(config, env) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The flag's values are checked by clap; the file's by the config.
    let format = log_format.and_then(|f| f.parse().ok()).unwrap_or(config.server.log_format);
    init_tracing(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, watch, !no_migrate)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Arc<Config>, watch: bool, migrate: bool) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let hooks = hookgate::Hooks { watch: watch.then_some(WATCH_INTERVAL), migrate, ..hookgate::Hooks::default() };
    hookgate::run_with(config, listener, shutdown_signal(), hooks).await
}

/// How often `serve --watch` looks at the config file and the plugins.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The log on stdout, filtered by `RUST_LOG` (default `info`): lines for people, or one JSON
/// object per line (`timestamp`, `level`, `fields` with `message`, and the span it happened in).
fn init_tracing(format: hookgate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match format {
        hookgate::config::LogFormat::Text => fmt.init(),
        hookgate::config::LogFormat::Json => fmt.json().init(),
    }
}

fn print_summary(c: &Config) {
    println!("config ok");
    println!("  listen:   {}", c.server.listen);
    println!("  data_dir: {}", c.server.data_dir.display());
    if matches!(c.storage, hookgate::config::StorageConfig::Redb) {
        println!("  storage:  redb ({})", c.server.data_dir.join(hookgate::store::DB_FILE).display());
    }
    let d = &c.delivery;
    println!(
        "  delivery: timeout {:?}, {} retries (first after {:?}, x{}), https only: {}, private networks: {}",
        d.timeout,
        d.retry.max_retries,
        d.retry.initial,
        d.retry.multiplier,
        !d.allow_http,
        if d.allow_private_networks { "allowed" } else { "refused" }
    );
    let disable = d.disable_after.map_or("never".to_owned(), |t| format!("after {} of failures", human(t)));
    println!(
        "  health:   circuit opens after {} failures in a row (cooldown {}), disable {}",
        d.breaker_failures,
        human(d.breaker_cooldown),
        disable
    );
    let r = &c.retention;
    println!("  retention: deliveries {}, idempotency keys {}", human(r.deliveries), human(r.idempotency));
    if !c.tenants.is_empty() {
        let ids: Vec<String> = c.tenants.iter().map(|t| format!("{} ({})", t.id, t.secret.fingerprint())).collect();
        println!("  tenants:  default, {}", ids.join(", "));
    }
    if let Some(ops) = &c.operations_endpoint {
        println!("  operational events -> {ops}");
    }
    println!("  endpoints ({}):", c.endpoints.len());
    for e in &c.endpoints {
        let scope = if e.matches.is_empty() {
            String::new()
        } else {
            let m: Vec<String> = e.matches.iter().map(|(k, v)| format!("{k}={}", v.to_canonical())).collect();
            format!(" [match {}]", m.join(", "))
        };
        let chain = if e.plugins.is_empty() { String::new() } else { format!(" plugins: {}", e.plugins.join(" -> ")) };
        let rate = e.rate_limit.map(|r| format!(" rate {r}")).unwrap_or_default();
        let order = match &e.fifo {
            None => String::new(),
            Some(f) => format!(" fifo{}", f.key.as_deref().map(|k| format!(" by {k}")).unwrap_or_default()),
        };
        println!("    {} -> {} triggers: {}{}{}{}{}", e.id, e.url, e.triggers, scope, chain, rate, order);
    }
    if !c.plugins.is_empty() {
        println!("  plugins ({}):", c.plugins.len());
        for p in &c.plugins {
            let mib = p.memory_limit >> 20;
            println!("    {} <- {} (timeout {:?}, memory {mib} MiB)", p.name, p.path.display(), p.timeout);
        }
        for (trigger, chain) in &c.trigger_plugins {
            println!("    trigger {trigger}: {}", chain.join(" -> "));
        }
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
}

/// A duration the way the config file writes it: `5d`, `24h`, `30s`, `250ms`.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (d.subsec_millis(), s) {
        (0, s) if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        (0, s) if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        (0, s) if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        (0, s) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

fn plugin_command(action: PluginCommand, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    const USAGE: u8 = 3;
    match action {
        PluginCommand::New { lang, name } => {
            let Some(l) = hookgate::workbench::Lang::parse(&lang) else {
                eprintln!("error: --lang {lang:?} must be rust, js or python");
                return ExitCode::from(USAGE);
            };
            match hookgate::workbench::new_plugin(l, &name, std::path::Path::new(".")) {
                Ok(dir) => {
                    println!("wrote {}/ ; build it with {}/build.sh, then:", dir.display(), dir.display());
                    println!(
                        "  cd {} && hookgate plugin run --config hookgate.toml --trigger bot.state_change --event event.json",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(USAGE)
                }
            }
        }
        PluginCommand::Run { config, trigger, endpoint, event } => {
            let config = match Config::load(&config, env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            let bytes = if event.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
            } else {
                std::fs::read(&event)
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot read --event {}: {e}", event.display());
                    return ExitCode::from(USAGE);
                }
            };
            let result = tokio::runtime::Runtime::new().map_err(|e| e.to_string()).and_then(|rt| {
                rt.block_on(hookgate::workbench::run(hookgate::workbench::RunArgs {
                    config: &config,
                    trigger: &trigger,
                    endpoint: endpoint.as_deref(),
                    event: &bytes,
                }))
            });
            match result {
                Ok((report, verdict)) => {
                    print!("{report}");
                    ExitCode::from(verdict.code())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(USAGE)
                }
            }
        }
    }
}

/// `hookgate rotate-main-key`: see the command's help.
fn rotate_main_key(path: &std::path::Path, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    const VAR: &str = "HOOKGATE_NEW_MAIN_KEY";
    let config = match Config::load(path, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(text) = env(VAR).filter(|t| !t.trim().is_empty()) else {
        eprintln!("error: set {VAR} to the new main key (32 bytes in base64: `openssl rand -base64 32`)");
        return ExitCode::FAILURE;
    };
    let new = match hookgate::seal::MainKey::parse(&text) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {VAR}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let id = new.id().to_owned();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(hookgate::rotate_main_key(&config, new)));
    match result {
        Ok(n) => {
            println!(
                "re-sealed {n} stored record(s) under main key {id}; now set [signing] main_key to the new key and start the gateway"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

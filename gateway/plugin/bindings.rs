//! The single `bindgen!` of the plugin WIT (`wit/hookgate.wit`), and nothing else.
//!
//! Owns: the generated types. Only `plugin/` sees them; the rest of the gateway gets domain
//! types from `plugin::mod`.
//! Must not touch: engine setup, limits or the cache.

wasmtime::component::bindgen!({
    path: "wit",
    world: "plugin",
    // `handle` runs on the async runtime: the epoch callback yields between ticks and the
    // call's future can be dropped at its deadline or at shutdown. `host.log` stays a plain
    // function; it never waits.
    exports: { default: async },
});

pub use self::hookgate::plugin::host::Level;

//! The one `bindgen!` site: Rust types and call stubs for the WIT package `pgwarden:plugin@0.1.0`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pgwarden:plugin/host",
});

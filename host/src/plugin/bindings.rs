//! The one `bindgen!` site: Rust types and call stubs for the WIT package `pgwarden:plugin@0.1.1` (which
//! also loads components built for `0.1.0`: wasmtime matches names within a semver-compatible track).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pgwarden:plugin/host",
    with: {
        // The handles `query-policy` receives: one session and one query per call, whose values the store
        // holds for the call (see `host::CallInput`), so the resources carry no data of their own.
        "pgwarden:plugin/handles.session": super::host::SessionHandle,
        "pgwarden:plugin/handles.query": super::host::QueryHandle,
    },
});

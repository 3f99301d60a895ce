//! The wit-bindgen bindings behind the SDK's public modules.
//!
//! Why the bindings are split this way: every `generate!` with `pub_export_macro` emits one
//! `#[macro_export]` helper macro per exported interface, named after the interface. Generating the
//! WIT package's own `router-plugin`, `policy-plugin`, `auth-plugin` and `host` worlds in one crate
//! would therefore define the `init` helper several times at the crate root, which Rust rejects. So the
//! `base` world (the `log` import, the `init` export and every shared type) is generated once, and
//! each hook comes from a one-export world written inline here. A plugin's export macro expands both
//! (see the crate root); wit-component unions the worlds found in the module, so the component ends
//! up with exactly the exports of the hooks the plugin named, plus `init`.
//!
//! The hook worlds reuse `base`'s shared types through `with`, so `SessionInfo`, `Denial` and
//! `PoolMode` are one Rust type each, whichever hook uses them. Paths go through
//! `pgwarden_plugin_sdk::` (not `crate::`) because the export macros expand in the plugin's crate.

/// The `base` world: `import log`, `export init`, and every type of the `types` interface.
pub mod base {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "pgwarden:plugin/base",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "pgwarden_plugin_sdk::bindings::base",
        runtime_path: "pgwarden_plugin_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
        generate_unused_types: true,
    });
}

/// The `router` export alone.
pub mod router {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package pgwarden:sdk;
            world router-hook {
                export pgwarden:plugin/router@0.1.1;
            }
        ",
        world: "pgwarden:sdk/router-hook",
        with: {
            "pgwarden:plugin/types@0.1.1": pgwarden_plugin_sdk::bindings::base::pgwarden::plugin::types,
        },
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "pgwarden_plugin_sdk::bindings::router",
        runtime_path: "pgwarden_plugin_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

/// The `policy` export alone.
pub mod policy {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package pgwarden:sdk;
            world policy-hook {
                export pgwarden:plugin/policy@0.1.1;
            }
        ",
        world: "pgwarden:sdk/policy-hook",
        with: {
            "pgwarden:plugin/types@0.1.1": pgwarden_plugin_sdk::bindings::base::pgwarden::plugin::types,
        },
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "pgwarden_plugin_sdk::bindings::policy",
        runtime_path: "pgwarden_plugin_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

/// The `query-policy` export alone, with the `handles` import its check receives.
pub mod query_policy {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package pgwarden:sdk;
            world query-policy-hook {
                import pgwarden:plugin/handles@0.1.1;
                export pgwarden:plugin/query-policy@0.1.1;
            }
        ",
        world: "pgwarden:sdk/query-policy-hook",
        with: {
            "pgwarden:plugin/types@0.1.1": pgwarden_plugin_sdk::bindings::base::pgwarden::plugin::types,
            "pgwarden:plugin/handles@0.1.1": generate,
        },
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "pgwarden_plugin_sdk::bindings::query_policy",
        runtime_path: "pgwarden_plugin_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

/// The `auth` export alone, with the `database` import auth plugins may use.
pub mod auth {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package pgwarden:sdk;
            world auth-hook {
                import pgwarden:plugin/database@0.1.1;
                export pgwarden:plugin/auth@0.1.1;
            }
        ",
        world: "pgwarden:sdk/auth-hook",
        with: {
            "pgwarden:plugin/database@0.1.1": generate,
        },
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "pgwarden_plugin_sdk::bindings::auth",
        runtime_path: "pgwarden_plugin_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

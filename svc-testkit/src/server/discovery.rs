//! Minimal discovery documents: `/version`, `/api`, `/apis`, and resource lists.

use serde_json::{json, Value};

use crate::kind::Kind;

pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0+svc-testkit",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions() -> Value {
    json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] })
}

pub(crate) fn groups() -> Value {
    let gv = json!({ "groupVersion": "discovery.k8s.io/v1", "version": "v1" });
    json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{ "name": "discovery.k8s.io", "versions": [gv], "preferredVersion": gv }],
    })
}

pub(crate) fn resources(kind: Kind) -> Value {
    let singular = kind.kind().to_ascii_lowercase();
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kind.api_version(),
        "resources": [{
            "name": kind.plural(), "singularName": singular, "namespaced": true, "kind": kind.kind(),
            "verbs": ["create", "delete", "get", "list", "update", "watch"],
        }],
    })
}

//! RBAC for the fake API server: grants from `Role`s and `ClusterRole`s, checked the way the
//! apiserver's RBAC authorizer checks resource requests, with the same 403 message.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

use crate::kind::Kind;

/// The permissions of the one user the fake server serves: the rules of the roles bound to
/// it. With RBAC [on](crate::FakeApiServer::set_rbac), every resource request needs a
/// matching rule; non-resource paths (`/readyz`, `/version`, discovery) stay open, as the
/// default `system:public-info-viewer` and `system:discovery` roles leave them.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    user: String,
    /// (namespace the rule applies in, `None` for cluster-wide; the rule)
    grants: Vec<(Option<String>, PolicyRule)>,
}

impl Rbac {
    /// No permissions yet, for `user` (named in 403 messages, e.g.
    /// `system:serviceaccount:shop:app`).
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            grants: Vec::new(),
        }
    }

    /// Binds `role` (a RoleBinding in the role's namespace, `default` if it names none).
    #[must_use]
    pub fn bind_role(mut self, role: &Role) -> Self {
        let namespace = role
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        for rule in role.rules.iter().flatten() {
            self.grants.push((Some(namespace.clone()), rule.clone()));
        }
        self
    }

    /// Binds `role` cluster-wide (a ClusterRoleBinding).
    #[must_use]
    pub fn bind_cluster_role(mut self, role: &ClusterRole) -> Self {
        for rule in role.rules.iter().flatten() {
            self.grants.push((None, rule.clone()));
        }
        self
    }

    /// Whether `verb` on `kind` in `namespace` (`None`: across all namespaces) is allowed.
    pub fn allows(&self, verb: &str, kind: Kind, namespace: Option<&str>) -> bool {
        let (group, resource) = group_resource(kind);
        self.grants.iter().any(|(scope, rule)| {
            let in_scope = match (scope, namespace) {
                (None, _) => true,
                (Some(granted), Some(asked)) => granted == asked,
                (Some(_), None) => false,
            };
            let any = |list: &Option<Vec<String>>, want: &str| {
                list.iter().flatten().any(|v| v == "*" || v == want)
            };
            in_scope
                && any(&rule.api_groups, group)
                && any(&Some(rule.resources.clone().unwrap_or_default()), resource)
                && rule.verbs.iter().any(|v| v == "*" || v == verb)
        })
    }

    /// The apiserver's 403 message for a denied request.
    pub(crate) fn denial(&self, verb: &str, kind: Kind, namespace: Option<&str>) -> String {
        let (group, resource) = group_resource(kind);
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        format!(
            "{qualified} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}",
            self.user
        )
    }
}

fn group_resource(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("", "services"),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
    }
}

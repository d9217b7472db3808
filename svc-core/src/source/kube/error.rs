//! The Kubernetes source's typed errors: which failures are permanent (fix the configuration)
//! and which are transient (back off and retry).

/// Why a list or watch of the Kubernetes source failed. Reported to the store
/// ([`Store::report_source_error`](crate::store::Store::report_source_error)) as the cause of
/// [`NotSynced`](crate::store::NotSynced), so that a caller can downcast it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: the API server refused the credentials (a broken kubeconfig or an expired token).
    #[error("401 Unauthorized: cannot {verb} {resource}: {message}")]
    Unauthorized {
        /// `list` or `watch`.
        verb: &'static str,
        /// The resource, as RBAC names it (`services`, `endpointslices.discovery.k8s.io`).
        resource: &'static str,
        /// The API server's message.
        message: String,
    },
    /// 403: RBAC does not grant `verb` on `resource` (in `namespace`, or cluster-wide).
    #[error("403 Forbidden: missing permission to {verb} {resource} {where_}: {message}",
        where_ = match namespace { Some(ns) => format!("in namespace {ns}"), None => "cluster-wide".into() })]
    Forbidden {
        /// The verb RBAC must grant: `list` or `watch`.
        verb: &'static str,
        /// The resource, as RBAC names it.
        resource: &'static str,
        /// The namespace, `None` for a cluster-wide request.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// 404: the API server does not serve the resource (its API group is missing, e.g.
    /// `discovery.k8s.io/v1` before Kubernetes 1.21).
    #[error("404 Not Found: the API server does not serve {resource}: {message}")]
    NotServed {
        /// The resource.
        resource: &'static str,
        /// The API server's message.
        message: String,
    },
    /// Anything else (connection failures, 5xx, 429, timeouts): retried with backoff.
    #[error("{verb} {resource}: {source}")]
    Transient {
        /// `list` or `watch`.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Classifies a failed request.
    pub(crate) fn classify(
        error: kube::Error,
        verb: &'static str,
        resource: &'static str,
        namespace: Option<&str>,
    ) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 401 => Self::Unauthorized {
                verb,
                resource,
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                verb,
                resource,
                namespace: namespace.map(str::to_owned),
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 404 => Self::NotServed {
                resource,
                message: status.message.clone(),
            },
            source => Self::Transient {
                verb,
                resource,
                source,
            },
        }
    }

    /// Whether retrying cannot help until someone changes the configuration (credentials,
    /// RBAC, the cluster's version). The source still retries on its backoff schedule (up to
    /// 30 s apart), since RBAC is often granted after the pod starts, but reports the error to
    /// the store at once and logs it as an error.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Transient { .. })
    }
}

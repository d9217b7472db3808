//! `/readyz`: 200 once the dataplane is programmed and nothing fails, in the kube-apiserver's
//! check format.
//!
//! ```text
//! [+]shutdown ok
//! [+]store-synced ok
//! [+]manifests ok
//! [+]dataplane-programmed ok
//! [-]listeners failed: 1 listener of 1 Service failing, retried with backoff
//! [-]service/shop/web failed: 10.96.0.10:80/TCP: Address already in use (os error 98) (address_in_use, attempt 3, next in 800ms)
//! readyz check failed
//! ```
//!
//! Without `?verbose` a passing check says only `ok`; a failing one lists the failed checks.

use std::collections::BTreeMap;
use std::fmt::Write;

use http::{Response, StatusCode};
use svc_core::model::ServiceKey;
use tokio::time::Instant;

use super::{text, Body};
use crate::health::{source_checks, Check};
use crate::listeners::FailingListener;
use crate::Context;

/// Failing Services listed one by one; the rest are counted.
const MAX_SERVICE_CHECKS: usize = 100;

fn check(name: impl Into<String>, failure: Option<String>) -> Check {
    Check {
        name: name.into(),
        failure,
    }
}

/// Every readiness check, in order.
pub fn checks(ctx: &Context) -> Vec<Check> {
    let dataplane = &ctx.dataplane;
    let failing = dataplane.failing();
    let mut by_service: BTreeMap<&ServiceKey, Vec<&FailingListener>> = BTreeMap::new();
    for f in failing.iter() {
        by_service.entry(&f.service).or_default().push(f);
    }
    let mut out = vec![
        check(
            "shutdown",
            ctx.drain
                .is_signaled()
                .then(|| "draining: the proxy is shutting down".into()),
        ),
        check(
            "store-synced",
            (!ctx.store.is_synced())
                .then(|| "waiting for the initial lists of Services and EndpointSlices".into()),
        ),
    ];
    // The source's own: the manifests (one check per failing file) or the two watches.
    out.extend(source_checks(&ctx.source_health, &ctx.store));
    out.extend([
        check(
            "dataplane-programmed",
            (!dataplane.is_programmed())
                .then(|| "creating the listeners of the initial Services".into()),
        ),
        check(
            "listeners",
            (!failing.is_empty()).then(|| {
                format!(
                    "{} listener{} of {} Service{} failing, retried with backoff",
                    failing.len(),
                    plural(failing.len()),
                    by_service.len(),
                    plural(by_service.len())
                )
            }),
        ),
    ]);
    let now = Instant::now();
    for (key, listeners) in by_service.iter().take(MAX_SERVICE_CHECKS) {
        let reasons: Vec<String> = listeners
            .iter()
            .map(|f| {
                format!(
                    "{}/{}: {} ({}, attempt {}, next in {}ms)",
                    f.addr,
                    f.protocol.as_str(),
                    f.error,
                    f.cause.as_str(),
                    f.attempts,
                    f.retry_at.saturating_duration_since(now).as_millis()
                )
            })
            .collect();
        out.push(check(format!("service/{key}"), Some(reasons.join("; "))));
    }
    if by_service.len() > MAX_SERVICE_CHECKS {
        let more = by_service.len() - MAX_SERVICE_CHECKS;
        out.push(check(
            "services",
            Some(format!("{more} more failing Services not listed")),
        ));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The `/readyz` response.
pub fn respond(ctx: &Context, verbose: bool) -> Response<Body> {
    let checks = checks(ctx);
    let ready = checks.iter().all(|c| c.failure.is_none());
    if ready && !verbose {
        return text(StatusCode::OK, "ok\n");
    }
    let mut body = String::new();
    for c in &checks {
        match &c.failure {
            None if verbose => {
                let _ = writeln!(body, "[+]{} ok", c.name);
            }
            None => {}
            Some(why) => {
                let _ = writeln!(body, "[-]{} failed: {why}", c.name);
            }
        }
    }
    let (status, verdict) = if ready {
        (StatusCode::OK, "passed")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failed")
    };
    let _ = writeln!(body, "readyz check {verdict}");
    text(status, body)
}

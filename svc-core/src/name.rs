//! Parsing of the host names pods use for Services.

/// A host name split into the Service name and, when given, its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// The Service name.
    pub name: &'a str,
    /// The namespace, when the host names one.
    pub namespace: Option<&'a str>,
}

/// Splits `svc`, `svc.ns`, `svc.ns.svc` or `svc.ns.svc.<cluster_domain>` (with an optional
/// trailing dot). Anything else, such as a name in another domain, is `None`. Expects lower case.
pub fn parse<'a>(host: &'a str, cluster_domain: &str) -> Option<NameParts<'a>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let domain = cluster_domain.trim_end_matches('.');
    let rest = host
        .strip_suffix(domain)
        .and_then(|h| h.strip_suffix(".svc."))
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    let mut parts = rest.split('.');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let namespace = parts.next();
    if parts.next().is_some() || namespace == Some("") {
        return None;
    }
    Some(NameParts { name, namespace })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str) -> Option<(&str, Option<&str>)> {
        parse(host, "cluster.local").map(|p| (p.name, p.namespace))
    }

    #[test]
    fn every_form_a_pod_can_use() {
        assert_eq!(p("web"), Some(("web", None)));
        assert_eq!(p("web.shop"), Some(("web", Some("shop"))));
        assert_eq!(p("web.shop.svc"), Some(("web", Some("shop"))));
        assert_eq!(p("web.shop.svc.cluster.local"), Some(("web", Some("shop"))));
        assert_eq!(
            p("web.shop.svc.cluster.local."),
            Some(("web", Some("shop")))
        );
    }

    #[test]
    fn other_names_are_not_services() {
        assert_eq!(p("example.com.au"), None);
        assert_eq!(p("web.shop.svc.other.domain"), None);
        assert_eq!(p(""), None);
        assert_eq!(p(".shop"), None);
        assert_eq!(p("web."), Some(("web", None)));
        assert_eq!(p("web.shop.svc.cluster.local.."), None);
    }

    #[test]
    fn custom_domain() {
        let parts = parse("a.b.svc.corp.internal", "corp.internal").unwrap();
        assert_eq!((parts.name, parts.namespace), ("a", Some("b")));
    }
}

use super::*;

fn labels<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
    pairs.iter().copied().collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
}

#[test]
fn empty_matches_everything() {
    assert!(sel("").matches(&labels(&[])));
    assert!(sel("  ").is_empty());
}

#[test]
fn equality_and_existence() {
    let l = labels(&[("app", "web"), ("tier", "fe")]);
    assert!(sel("app=web").matches(&l));
    assert!(sel("app==web").matches(&l));
    assert!(!sel("app=db").matches(&l));
    assert!(sel("app!=db").matches(&l));
    assert!(sel("missing!=x").matches(&l));
    assert!(sel("app").matches(&l));
    assert!(!sel("!app").matches(&l));
    assert!(sel("!missing").matches(&l));
    assert!(sel("app=web, tier=fe").matches(&l));
    assert!(!sel("app=web,tier=be").matches(&l));
    assert!(sel("kubernetes.io/service-name=web")
        .matches(&labels(&[("kubernetes.io/service-name", "web")])));
}

#[test]
fn empty_value() {
    assert!(sel("a=").matches(&labels(&[("a", "")])));
    assert!(sel("a=,b").matches(&labels(&[("a", ""), ("b", "x")])));
    assert!(!sel("a=").matches(&labels(&[("a", "x")])));
}

#[test]
fn set_based() {
    let l = labels(&[("env", "prod")]);
    assert!(sel("env in (prod, staging)").matches(&l));
    assert!(!sel("env in (dev)").matches(&l));
    assert!(!sel("missing in (dev)").matches(&l));
    assert!(sel("env notin (dev,qa)").matches(&l));
    assert!(!sel("env notin (prod)").matches(&l));
    assert!(sel("missing notin (prod)").matches(&l));
    assert!(sel("env in (prod),!x").matches(&l));
}

#[test]
fn numeric() {
    let l = labels(&[("n", "5"), ("s", "x")]);
    assert!(sel("n>4").matches(&l));
    assert!(!sel("n>5").matches(&l));
    assert!(sel("n<6").matches(&l));
    assert!(!sel("s<6").matches(&l));
}

#[test]
fn rejects_garbage() {
    for bad in [
        "a=b=c", "=b", "a in b", "a in (b", "!", "a,", ",a", "a=$", "a>x", "a b", "in", "a=b/c",
    ] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
    }
}

#[test]
fn field_selector() {
    let f = FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system").unwrap();
    assert!(f.matches("default", "web"));
    assert!(!f.matches("kube-system", "web"));
    assert!(!f.matches("default", "db"));
    assert!(FieldSelector::parse("").unwrap().matches("a", "b"));
    assert!(FieldSelector::parse("spec.clusterIP=1.2.3.4").is_err());
    assert!(FieldSelector::parse("metadata.name").is_err());
}

#[test]
fn filter_on_json() {
    let obj =
        serde_json::json!({"metadata": {"namespace": "a", "name": "x", "labels": {"k": "v"}}});
    let mut f = Filter {
        namespace: Some("a".into()),
        labels: sel("k=v"),
        ..Filter::default()
    };
    assert!(f.matches(&obj));
    f.namespace = Some("b".into());
    assert!(!f.matches(&obj));
    f.namespace = None;
    f.labels = sel("k!=v");
    assert!(!f.matches(&obj));
}

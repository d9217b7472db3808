//! Builders for the k8s-openapi objects the fake API server stores.
//!
//! They fill in what the API server and the EndpointSlice controller would
//! (protocol `TCP`, `targetPort` = `port`, type `ClusterIP`, endpoint
//! conditions, the `kubernetes.io/service-name` label), so tests state only
//! what they care about. Every setter overrides those defaults.

mod endpoint_slice;
mod service;

pub use endpoint_slice::{
    endpoint_slice, EndpointPortSpec, EndpointSliceBuilder, EndpointSpec, LAST_CHANGE_TRIGGER_TIME,
    SERVICE_NAME_LABEL,
};
pub use service::{service, PortSpec, ServiceBuilder};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn object_meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn insert(map: &mut Option<BTreeMap<String, String>>, key: &str, value: &str) {
    map.get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

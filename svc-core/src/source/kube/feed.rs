//! Feeding the store from a `kube::runtime::watcher` stream, for apps that already watch
//! Services or EndpointSlices: no second watch, the same store semantics.
//!
//! ```no_run
//! # async fn doc(client: kube::Client, events: tokio::sync::mpsc::Sender<svc_core::store::Event>) {
//! use k8s_openapi::api::core::v1::Service;
//! use kube::runtime::watcher;
//! use svc_core::source::kube::feed;
//! use svc_core::store::Origin;
//!
//! let api = kube::Api::<Service>::all(client);
//! let stream = watcher(api, watcher::Config::default());
//! feed::services(stream, Origin::new("app-watcher"), events).await;
//! # }
//! ```
//!
//! A watcher's `Init`…`InitDone` becomes one full replace of what this origin holds (so other
//! origins keep theirs), `Apply` and `Delete` become single changes. Errors are logged; the
//! watcher retries them itself (with whatever backoff the stream was given).

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::Watched;
use crate::store::{Event, Origin};

/// Applies a Service watcher stream to the store behind `events`, tagged with `origin`;
/// returns when the stream ends or the store's receiver is gone.
pub async fn services<S>(stream: S, origin: Origin, events: mpsc::Sender<Event>)
where
    S: Stream<Item = watcher::Result<watcher::Event<corev1::Service>>>,
{
    feed(stream, origin, events).await
}

/// Applies an EndpointSlice watcher stream to the store behind `events`, tagged with
/// `origin`; returns when the stream ends or the store's receiver is gone.
pub async fn endpoint_slices<S>(stream: S, origin: Origin, events: mpsc::Sender<Event>)
where
    S: Stream<Item = watcher::Result<watcher::Event<discoveryv1::EndpointSlice>>>,
{
    feed(stream, origin, events).await
}

async fn feed<K, S>(stream: S, origin: Origin, events: mpsc::Sender<Event>)
where
    K: Watched,
    S: Stream<Item = watcher::Result<watcher::Event<K>>>,
{
    futures::pin_mut!(stream);
    // Between Init and InitDone: the list being collected (models, and keys that failed).
    let mut listing: Option<(Vec<K::Model>, Vec<crate::model::ServiceKey>)> = None;
    while let Some(item) = stream.next().await {
        let event = match item {
            Err(error) => {
                tracing::warn!(kind = K::NAME, %origin, %error, "watcher stream error");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listing = Some((Vec::new(), Vec::new()));
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some((good, bad)) = listing.as_mut() {
                    match crate::source::convert::<K, K::Model>(&obj, K::NAME) {
                        Ok(model) => good.push(model),
                        Err(_) => bad.push(super::watcher::key_of(&obj)),
                    }
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => match listing.take() {
                Some((good, bad)) => K::replace(good, bad),
                None => continue,
            },
            Ok(watcher::Event::Apply(obj)) => {
                match crate::source::convert::<K, K::Model>(&obj, K::NAME) {
                    Ok(model) => K::apply(model),
                    Err(_) => continue,
                }
            }
            Ok(watcher::Event::Delete(obj)) => K::delete(super::watcher::key_of(&obj)),
        };
        if events.send(event.tagged(&origin)).await.is_err() {
            return;
        }
    }
}

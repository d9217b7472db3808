//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked body.
//!
//! A watch is registered (with its replayed or initial events queued) under
//! the state lock, then a task pumps its queue into the response body. The
//! task applies the stream-level faults: while watches are stalled it holds
//! every line (and does not end at `timeoutSeconds`); a drop aborts the body
//! with an error so hyper cuts the connection without a final chunk.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::query::WatchOptions;
use super::shared::{Shared, WatchMsg};
use super::status::{reason_for, status_json, RespBody};
use crate::kind::Kind;
use crate::store::{ListAt, StoreError};

/// Lines buffered between the pump task and hyper.
const BODY_BUFFER: usize = 32;

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    object: &'a Value,
}

/// One watch event as a JSON line.
pub(crate) fn event_line(type_: &str, object: &Value) -> Bytes {
    // Serializing a `Value` cannot fail; an empty line would be skipped by clients.
    let mut line = serde_json::to_vec(&Line { type_, object }).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

/// A `BOOKMARK` event at `rv`, optionally marking the end of initial events.
pub(crate) fn bookmark_line(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let object =
        json!({ "apiVersion": kind.api_version(), "kind": kind.kind(), "metadata": metadata });
    event_line("BOOKMARK", &object)
}

/// An `ERROR` event carrying a `Status`.
fn error_line(code: u16, message: &str) -> Bytes {
    event_line("ERROR", &status_json(code, reason_for(code), message))
}

fn store_error_line(err: &StoreError) -> Bytes {
    match err {
        StoreError::Expired {
            requested,
            compacted,
        } => error_line(
            410,
            &format!("too old resource version: {requested} ({compacted})"),
        ),
        StoreError::TooLarge { requested, current } => error_line(
            504,
            &format!("Too large resource version: {requested}, current: {current}"),
        ),
        other => error_line(500, &format!("{other:?}")),
    }
}

/// Starts a watch and returns its streaming response.
pub(crate) fn start(shared: &Arc<Shared>, kind: Kind, opts: WatchOptions) -> Response<RespBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut id = None;
    {
        let mut inner = shared.inner.lock();
        let store = &inner.store;
        let queued = match (opts.send_initial_events, opts.rv) {
            (Some(true), _) | (None, None) => {
                let end_bookmark = opts.send_initial_events == Some(true);
                let at = opts.rv.map_or(ListAt::Current, ListAt::NotOlderThan);
                store.list(kind, &opts.filter, at, 0, None).map(|page| {
                    for obj in &page.items {
                        let _ = tx.send(WatchMsg::Line(event_line("ADDED", obj)));
                    }
                    if end_bookmark {
                        let _ = tx.send(WatchMsg::Line(bookmark_line(kind, page.rv, true)));
                    }
                })
            }
            (Some(false), None) => Ok(()),
            (_, Some(rv)) => store.events_since(kind, rv).map(|events| {
                for event in events {
                    if let Some((type_, object)) = event.view(&opts.filter) {
                        let _ = tx.send(WatchMsg::Line(event_line(type_.as_str(), &object)));
                    }
                }
            }),
        };
        match queued {
            Ok(()) => id = Some(shared.register(&mut inner, kind, opts.filter, opts.bookmarks, tx)),
            Err(err) => {
                let _ = tx.send(WatchMsg::Line(store_error_line(&err)));
                let _ = tx.send(WatchMsg::End);
            }
        }
    }

    let (body_tx, body_rx) = mpsc::channel(BODY_BUFFER);
    let (abort_tx, abort_rx) = oneshot::channel();
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let guard = id.map(|id| Registration {
        shared: shared.clone(),
        id,
    });
    // Subscribe before answering, so a drop right after this returns is seen.
    let faults = FaultSignals {
        stall: shared.faults.stall.subscribe(),
        drops: shared.faults.drops.subscribe(),
    };
    tokio::spawn(pump(guard, faults, rx, body_tx, abort_tx, deadline));

    let body = ChannelBody {
        rx: body_rx,
        abort: Some(abort_rx),
    };
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Unregisters the watcher when its pump task ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.unregister(self.id);
    }
}

/// Receivers of the stream-level faults.
struct FaultSignals {
    stall: watch::Receiver<bool>,
    drops: watch::Receiver<u64>,
}

/// Moves queued lines into the body until the stream ends.
async fn pump(
    _registration: Option<Registration>,
    FaultSignals {
        mut stall,
        mut drops,
    }: FaultSignals,
    mut queue: mpsc::UnboundedReceiver<WatchMsg>,
    body: mpsc::Sender<Bytes>,
    abort: oneshot::Sender<()>,
    deadline: Option<Instant>,
) {
    let expired = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        let next = tokio::select! {
            biased;
            _ = drops.changed() => break,
            () = body.closed() => return,
            msg = queue.recv() => msg,
            () = &mut expired => None,
        };
        // Hold everything, including the end of the stream, while stalled.
        let unstalled = tokio::select! {
            biased;
            _ = drops.changed() => break,
            () = body.closed() => return,
            unstalled = async { stall.wait_for(|stalled| !*stalled).await.is_ok() } => unstalled,
        };
        let line = match next {
            Some(WatchMsg::Line(line)) if unstalled => line,
            _ => return,
        };
        tokio::select! {
            biased;
            _ = drops.changed() => break,
            sent = body.send(line) => if sent.is_err() { return },
        }
    }
    let _ = abort.send(());
}

/// The streaming response body: lines from the pump, or an abort.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    abort: Option<oneshot::Receiver<()>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(abort) = self.abort.as_mut() {
            match Pin::new(abort).poll(cx) {
                Poll::Ready(Ok(())) => {
                    self.abort = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "watch dropped by fault injection",
                    ))));
                }
                Poll::Ready(Err(_)) => self.abort = None,
                Poll::Pending => {}
            }
        }
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

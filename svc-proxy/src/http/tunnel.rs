//! Upgraded connections (WebSocket): after a `101`, the client's connection and the
//! endpoint's are joined byte for byte by the TCP copy loop (half-close, `--idle-timeout`,
//! byte counters), and reset together if the drain deadline cuts them.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::io::ResetOnCut;
use crate::target::Target;

/// Joins an upgraded client connection to the upgraded endpoint connection. At the drain
/// deadline both are reset (the client side by its [`ResetOnCut`]).
pub(super) async fn tunnel(
    target: Arc<Target>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(service = %target.service, %error, "upgrade failed");
            return;
        }
    };
    let cutting = target.ctx.drain.cutting();
    let end = tokio::select! {
        end = join_upgraded(&target, TokioIo::new(client), upstream) => Some(end),
        () = cutting => None,
    };
    tracing::debug!(service = %target.service, ?end, "upgraded connection ended (None: cut at the drain deadline)");
}

async fn join_upgraded(
    target: &Target,
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    upstream: hyper::upgrade::Upgraded,
) -> crate::tcp::copy::CopyEnd {
    use crate::tcp::copy::{self, CopyEnd, Counters};
    use tokio::io::AsyncWriteExt;
    let args = &target.ctx.args;
    let metrics = &target.metrics;
    let counters = Counters {
        rx: &metrics.rx,
        tx: &metrics.tx,
    };
    // The endpoint side is svc-tower's own socket: it can be waited on without a buffer, and
    // is reset if the drain deadline cuts the tunnel.
    let parts = match upstream.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(upstream) => {
            let upstream = TokioIo::new(upstream);
            let (size, idle) = (args.buffer_size, args.idle_timeout);
            return copy::bidirectional_streams(client, upstream, size, idle, counters).await;
        }
    };
    let mut upstream = ResetOnCut::new(parts.io.into_inner(), target.ctx.drain.cut_token());
    if !parts.read_buf.is_empty() {
        // What the endpoint sent right after its `101`, already read by hyper.
        if let Err(e) = client.write_all(&parts.read_buf).await {
            return CopyEnd::Error(e);
        }
        metrics.tx.inc_by(parts.read_buf.len() as u64);
    }
    let (size, idle) = (args.buffer_size, args.idle_timeout);
    copy::bidirectional_io(client, upstream.stream_mut(), size, idle, counters).await
}

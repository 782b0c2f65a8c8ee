//! The reader and writer tasks of a call, and the function that runs one call end to end.
//!
//! The reader forwards the carrier's WebSocket frames to the session over a bounded channel
//! (so a slow session pushes back on the socket instead of queueing without limit); the
//! writer sends what the session gives it, with a time limit on each write so a peer that
//! stops reading cannot pin the task. Neither parses anything: the session owns the protocol.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::CallId;
use super::session::{Session, SessionDeps};
use crate::carrier::CarrierKind;

/// Frames queued from the reader to the session.
pub const INBOUND_QUEUE: usize = 64;
/// Frames queued from the session to the writer. With egress pacing a healthy call has a
/// handful in flight; a full queue means the carrier stopped reading.
pub const OUTBOUND_QUEUE: usize = 256;
/// Longest a single write may take before the peer is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reader saw on the socket.
#[derive(Debug)]
pub enum InboundFrame {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame (not part of either carrier's protocol), with its length.
    Binary(usize),
    /// A message over the size limit; the socket cannot be read further.
    TooLarge,
    /// The peer closed the socket (with its close code, if any).
    Closed(Option<u16>),
    /// The connection failed.
    Failed(String),
}

/// What the session asks the writer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundFrame {
    /// A text frame.
    Text(String),
    /// A close frame; the writer stops after it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Reason (cut to the protocol's 123-byte limit).
        reason: String,
    },
}

/// Forwards frames until the socket ends or the session goes away.
pub async fn run_reader(mut stream: SplitStream<WebSocket>, frames: mpsc::Sender<InboundFrame>) {
    loop {
        let frame = match stream.next().await {
            None => InboundFrame::Closed(None),
            Some(Ok(Message::Text(text))) => InboundFrame::Text(text),
            Some(Ok(Message::Binary(bytes))) => InboundFrame::Binary(bytes.len()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(close))) => InboundFrame::Closed(close.map(|c| c.code)),
            Some(Err(error)) => {
                if is_capacity_error(&error) {
                    InboundFrame::TooLarge
                } else {
                    InboundFrame::Failed(error.to_string())
                }
            }
        };
        let last = !matches!(frame, InboundFrame::Text(_) | InboundFrame::Binary(_));
        if frames.send(frame).await.is_err() || last {
            return;
        }
    }
}

/// Whether a read error is the message/frame size limit.
fn is_capacity_error(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tungstenite) = e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(
                tungstenite,
                tokio_tungstenite::tungstenite::Error::Capacity(_)
            );
        }
        source = e.source();
    }
    let text = error.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("too big")
}

/// Sends frames until a close, the end of the queue, or a write error or stall.
pub async fn run_writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<OutboundFrame>,
) {
    while let Some(frame) = frames.recv().await {
        let (message, last) = match frame {
            OutboundFrame::Text(text) => (Message::Text(text.into()), false),
            OutboundFrame::Close { code, reason } => (
                Message::Close(Some(CloseFrame {
                    code,
                    reason: truncate_reason(&reason).into(),
                })),
                true,
            ),
        };
        // Feed everything already queued, then flush once.
        let mut result = tokio::time::timeout(WRITE_TIMEOUT, sink.feed(message)).await;
        let mut closing = last;
        while !closing && matches!(result, Ok(Ok(()))) {
            match frames.try_recv() {
                Ok(OutboundFrame::Text(text)) => {
                    result =
                        tokio::time::timeout(WRITE_TIMEOUT, sink.feed(Message::Text(text.into())))
                            .await;
                }
                Ok(OutboundFrame::Close { code, reason }) => {
                    closing = true;
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: truncate_reason(&reason).into(),
                    }));
                    result = tokio::time::timeout(WRITE_TIMEOUT, sink.feed(close)).await;
                }
                Err(_) => break,
            }
        }
        if matches!(result, Ok(Ok(()))) {
            result = tokio::time::timeout(WRITE_TIMEOUT, sink.flush()).await;
        }
        match result {
            Ok(Ok(())) if !closing => {}
            Ok(Ok(())) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, "write failed; peer gone");
                return;
            }
            Err(_) => {
                tracing::warn!("write stalled for {WRITE_TIMEOUT:?}; dropping the connection");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
}

/// Cuts a close reason to the 123 bytes a close frame can carry, on a char boundary.
pub fn truncate_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Runs one carrier connection to its end: spawns the reader and writer, runs the session in
/// this task, then tears the tasks down.
pub async fn serve_call(socket: WebSocket, carrier: CarrierKind, deps: Arc<SessionDeps>) {
    let call_id = CallId::new();
    let span = tracing::info_span!("call", %call_id, %carrier);
    let open_streams = deps.metrics.open_streams.clone();
    open_streams.inc();
    let (sink, stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let reader = tokio::spawn(run_reader(stream, in_tx));
    let writer = tokio::spawn(run_writer(sink, out_rx));
    let session = Session::new(call_id, carrier, deps, in_rx, out_tx);
    tracing::Instrument::instrument(session.run(), span).await;
    reader.abort();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer).await;
    open_streams.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123 && cut.len() >= 122);
        assert!(long.starts_with(cut));
    }
}

//! The live event hub: CallEvents fanned out to whoever watches a call, as the writer gathers
//! them (before they reach the database).
//!
//! Each watched call has a bounded broadcast channel. A subscriber that falls behind loses the
//! oldest events and learns how many from [`broadcast::error::RecvError::Lagged`]; it never slows
//! the writer. Publishing a row for a call nobody watches is one map lookup. A call's channel
//! goes when its last receiver does (noticed on the next publish or subscribe) and when its
//! `call_ended` event has been published (receivers then see the channel close after the last
//! event).

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use super::calls::EventRow;

/// Events buffered per watched call for its slowest subscriber.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Fans CallEvent rows out to subscribers by call id. Cheap to clone (clones share the hub).
#[derive(Debug, Clone)]
pub struct EventHub {
    calls: Arc<DashMap<String, broadcast::Sender<Arc<EventRow>>>>,
    capacity: usize,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(DEFAULT_CAPACITY)
    }
}

impl EventHub {
    /// A hub buffering up to `capacity` events per watched call.
    pub fn new(capacity: usize) -> Self {
        EventHub {
            calls: Arc::new(DashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Receives the events of `call_id` published from now on.
    pub fn subscribe(&self, call_id: &str) -> broadcast::Receiver<Arc<EventRow>> {
        self.calls.retain(|_, sender| sender.receiver_count() > 0);
        self.calls
            .entry(call_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Hands each row to its call's subscribers, if any, without waiting.
    pub fn publish(&self, rows: &[EventRow]) {
        for row in rows {
            let unwatched = match self.calls.get(&row.call_id) {
                Some(sender) => sender.send(Arc::new(row.clone())).is_err(),
                None => continue,
            };
            if row.kind == "call_ended" {
                self.calls.remove(&row.call_id);
            } else if unwatched {
                self.calls
                    .remove_if(&row.call_id, |_, sender| sender.receiver_count() == 0);
            }
        }
    }

    /// How many calls are watched.
    pub fn watched(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(call: &str, seq: i64, kind: &str) -> EventRow {
        EventRow {
            call_id: call.into(),
            seq,
            at_us: seq,
            kind: kind.into(),
            data: "{}".into(),
        }
    }

    #[tokio::test]
    async fn subscribers_get_their_calls_events_only() {
        let hub = EventHub::new(8);
        let mut a = hub.subscribe("a");
        let mut a2 = hub.subscribe("a");
        hub.publish(&[
            row("a", 1, "dtmf"),
            row("b", 1, "dtmf"),
            row("a", 2, "dtmf"),
        ]);
        for rx in [&mut a, &mut a2] {
            assert_eq!(rx.recv().await.unwrap().seq, 1);
            assert_eq!(rx.recv().await.unwrap().seq, 2);
            assert!(rx.try_recv().is_err());
        }
        assert_eq!(hub.watched(), 1);
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_and_is_told() {
        let hub = EventHub::new(4);
        let mut rx = hub.subscribe("a");
        let rows: Vec<EventRow> = (1..=10).map(|i| row("a", i, "dtmf")).collect();
        hub.publish(&rows);
        assert_eq!(
            rx.recv().await.unwrap_err(),
            broadcast::error::RecvError::Lagged(6)
        );
        assert_eq!(rx.recv().await.unwrap().seq, 7);
    }

    #[tokio::test]
    async fn channels_go_with_their_last_receiver_or_the_call_end() {
        let hub = EventHub::new(4);
        let rx = hub.subscribe("a");
        drop(rx);
        hub.publish(&[row("a", 1, "dtmf")]);
        assert_eq!(hub.watched(), 0);

        let gone = hub.subscribe("b");
        drop(gone);
        let _c = hub.subscribe("c");
        assert_eq!(hub.watched(), 1, "subscribing sweeps abandoned channels");

        let mut d = hub.subscribe("d");
        hub.publish(&[row("d", 1, "dtmf"), row("d", 2, "call_ended")]);
        assert_eq!(hub.watched(), 1);
        assert_eq!(d.recv().await.unwrap().seq, 1);
        assert_eq!(d.recv().await.unwrap().kind, "call_ended");
        assert_eq!(
            d.recv().await.unwrap_err(),
            broadcast::error::RecvError::Closed
        );
    }
}

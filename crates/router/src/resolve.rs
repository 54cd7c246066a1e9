//! [`Resolver`]: how a worker asks for a neighbour it has no MAC address
//! for, without blocking and without sending ARP or NDP itself. It
//! `try_send`s (ifindex, next hop) on a bounded channel to whoever resolves
//! (the control plane's route mirror, which asks the kernel); a full
//! channel drops the request, counted. Std only: the forwarding decision
//! builds without the OS.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// A worker's handle for neighbour resolution: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Resolver {
    tx: SyncSender<(u32, IpAddr)>,
    counters: Arc<ResolverCounters>,
}

/// What the resolvers of one channel asked, and what the full channel dropped.
#[derive(Debug, Default)]
pub struct ResolverCounters {
    pub requested: AtomicU64,
    pub queue_full: AtomicU64,
}

impl Resolver {
    /// A resolver whose requests arrive at the returned receiver, at most
    /// `depth` waiting.
    pub fn channel(depth: usize) -> (Resolver, Receiver<(u32, IpAddr)>) {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        (Resolver { tx, counters: Arc::default() }, rx)
    }

    /// Asks to resolve `ip` on `ifindex`. Returns `false` if the request
    /// was dropped because the channel is full or its receiver has gone.
    pub fn resolve(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.counters.requested.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send((ifindex, ip)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The counters of this resolver's channel.
    pub fn counters(&self) -> &ResolverCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_drops_and_counts() {
        let (r, rx) = Resolver::channel(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.clone().resolve(1, ip) && r.resolve(2, ip));
        assert!(!r.resolve(3, ip));
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(r.counters().requested.load(Ordering::Relaxed), 3);
        assert_eq!(r.counters().queue_full.load(Ordering::Relaxed), 1);
        drop(rx);
        assert!(!r.resolve(4, ip));
    }
}

//! The dataplane's own counters: handoff between cores, transmit, and the
//! drops that happen around the engine (routing, full rings), each with a
//! named reason like the engine's ([`wire::named_counters!`]).

wire::named_counters! {
    /// Why the dataplane (not the engine) dropped a frame.
    pub enum Drop {
        /// The handoff ring to the owning worker was full.
        HandoffRingFull => "handoff_ring_full",
        /// Handed to a worker that had already stopped (at a stop or a
        /// restart): counted by the sender when it stops in turn.
        HandoffWorkerGone => "handoff_worker_gone",
        /// The port's transmit ring did not take the frame.
        TxRingFull => "tx_ring_full",
        /// Too long for the port it leaves by (longer than the device takes,
        /// or than an AF_XDP chunk): the device refused it. The frames
        /// behind it in the batch still go.
        TxOversize => "tx_oversize",
        /// More frames for one port in one loop than its transmit batch holds.
        TxBatchFull => "tx_batch_full",
        /// The router did not forward it: the router's counters say why (no route, TTL, too big, ...).
        Routing => "routing",
        /// Its next hop's link-layer address did not come within a second
        /// (or too many frames already waited for it, or the worker stopped).
        NeighbourUnresolved => "neighbour_unresolved",
        /// The route leaves by an interface that is not one of torwart's ports.
        NotViaPort => "route_not_via_port",
        /// The route leaves on the other side than the firewall decided (inside vs. outside).
        SideMismatch => "route_side_mismatch",
        /// More ICMP errors were generated in one loop than wait to go through the engine.
        ReinjectOverflow => "icmp_reinject_overflow",
        /// More held frames came free in one loop than the release batch holds.
        ReleaseOverflow => "release_overflow",
        /// The kernel dropped it before the worker saw it: the port's
        /// receive ring was full or had no buffer (the worker fell behind),
        /// or it was longer than a buffer (a port's MTU above what torwart
        /// takes).
        /// Read from the kernel's counters when the stats are published.
        ReceiveLost => "rx_lost",
    }
}

/// A worker's dataplane counters (plain integers: one worker owns them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DataplaneCounters {
    /// Frames received from the ports, per port index.
    pub rx: Vec<u64>,
    /// Frames transmitted, per port index.
    pub tx: Vec<u64>,
    /// Frames owned by the worker that received them.
    pub same_core: u64,
    /// Frames handed to another worker.
    pub handed_off: u64,
    /// Frames received from other workers.
    pub handed_in: u64,
    /// Later fragments of inbound datagrams (to a public address that
    /// several members share) steered to where their first fragment went.
    pub fragments_followed: u64,
    /// ICMP errors the router generated (time exceeded, unreachable, too big).
    pub icmp_generated: u64,
    /// Neighbour resolutions asked of the kernel.
    pub resolutions: u64,
    /// Frames that waited for their next hop's resolution (sent when it
    /// came, or dropped as `neighbour_unresolved`).
    pub neighbour_waited: u64,
    /// Loops that did not receive from the ports because a handoff ring to
    /// another worker had no room for a batch (back-pressure).
    pub backpressure: u64,
    /// Receive calls that failed (the device's own counters say why).
    pub rx_errors: u64,
    /// Loop iterations that found nothing to do.
    pub idle_loops: u64,
    /// Times an idle worker waited (slept on its ports' descriptors).
    pub waits: u64,
    /// Naps of an idle worker while traffic flows (interrupt moderation:
    /// `Idle::Sleep`'s `coalesce`).
    pub naps: u64,
    /// Times traffic stopped with too little load to nap for
    /// ([`crate::Pacer`]): the worker waited for the next frame instead.
    pub naps_skipped: u64,
    pub loops: u64,
    /// Flow listings answered ([`crate::flows`]).
    pub flow_queries: u64,
    /// Flow table entries looked at for them.
    pub flow_query_visits: u64,
    /// Listings the control side gave up before this worker finished them.
    pub flow_queries_abandoned: u64,
    drops: [u64; Drop::COUNT],
}

impl Clone for DataplaneCounters {
    fn clone(&self) -> Self {
        DataplaneCounters { rx: self.rx.clone(), tx: self.tx.clone(), ..*self }
    }

    /// Into `self`'s own vectors: a stats snapshot filled again allocates nothing.
    fn clone_from(&mut self, source: &Self) {
        let (mut rx, mut tx) = (core::mem::take(&mut self.rx), core::mem::take(&mut self.tx));
        rx.clone_from(&source.rx);
        tx.clone_from(&source.tx);
        *self = DataplaneCounters { rx, tx, ..*source };
    }
}

impl DataplaneCounters {
    pub fn new(ports: usize) -> Self {
        DataplaneCounters { rx: vec![0; ports], tx: vec![0; ports], ..Default::default() }
    }

    #[inline]
    pub fn drop(&mut self, r: Drop) {
        self.drops[r.index()] += 1;
    }

    #[inline]
    pub fn drop_n(&mut self, r: Drop, n: u64) {
        self.drops[r.index()] += n;
    }

    /// Sets a count kept elsewhere (the kernel's, read now and then).
    pub fn set_dropped(&mut self, r: Drop, n: u64) {
        self.drops[r.index()] = n;
    }

    pub fn dropped(&self, r: Drop) -> u64 {
        self.drops[r.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every drop reason with its count, in declaration order.
    pub fn drops(&self) -> impl Iterator<Item = (Drop, u64)> + '_ {
        Drop::ALL.iter().map(|&r| (r, self.drops[r.index()]))
    }

    /// Adds `o` into `self` (summing workers).
    pub fn add(&mut self, o: &DataplaneCounters) {
        let grow = |v: &mut Vec<u64>, n: usize| {
            if v.len() < n {
                v.resize(n, 0)
            }
        };
        grow(&mut self.rx, o.rx.len());
        grow(&mut self.tx, o.tx.len());
        for (a, b) in self.rx.iter_mut().zip(&o.rx) {
            *a += b;
        }
        for (a, b) in self.tx.iter_mut().zip(&o.tx) {
            *a += b;
        }
        self.same_core += o.same_core;
        self.handed_off += o.handed_off;
        self.handed_in += o.handed_in;
        self.fragments_followed += o.fragments_followed;
        self.icmp_generated += o.icmp_generated;
        self.resolutions += o.resolutions;
        self.neighbour_waited += o.neighbour_waited;
        self.idle_loops += o.idle_loops;
        self.waits += o.waits;
        self.naps += o.naps;
        self.naps_skipped += o.naps_skipped;
        self.rx_errors += o.rx_errors;
        self.backpressure += o.backpressure;
        self.loops += o.loops;
        self.flow_queries += o.flow_queries;
        self.flow_query_visits += o.flow_query_visits;
        self.flow_queries_abandoned += o.flow_queries_abandoned;
        for (a, b) in self.drops.iter_mut().zip(&o.drops) {
            *a += b;
        }
    }
}

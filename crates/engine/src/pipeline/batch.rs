//! The three passes over a chunk of a batch (at most
//! [`MAX_BATCH`](super::MAX_BATCH) frames): parse, look up, decide. Each
//! pass walks the whole chunk before the next begins, so that what one
//! packet waits for in memory (its headers, its hash bucket, its flow, its
//! member's state) is fetched while the others are worked on. The passes
//! hand each other per-lane arrays that the engine owns and reuses
//! (`metas`, `parsed`, `hashes`, `guesses`, `hits`):
//! nothing is allocated per batch.
//!
//! Pass 3 sends each packet to its stage (fragment, related ICMP error or
//! tracking), then, if the stage forwards it on a member's flow, to the
//! member's shaper with the `Charge` the stage returned.

use super::{Charge, Engine, Lane, MAX_BATCH};
use crate::conntrack::{NO_ACCOUNT, NO_GUESS};
use crate::counters::DropReason;
use crate::members::{DOWN, UP};
use crate::shaping::Shaping;
use crate::time::Time;
use crate::{prefetch_headers, Side, Verdict};
use wire::classify::{classify_into, Meta, ParseError, L4};
use wire::FrameBuf;

/// How many packets apart pass 2 guesses a lookup's entry (and fetches its
/// flow) and confirms it (and fetches the member's state): a whole batch of
/// the daemon's default size, so that every flow of such a batch is on its
/// way before the first is confirmed. A flow's lines take longer to come
/// from memory than eight packets' guesses take (8 until session 20: about
/// a tenth slower on campus-2018, docs/benchmarks.md).
const LOOKUP_AHEAD: usize = 64;

/// How many frames ahead pass 1 prefetches the headers it parses next: a
/// frame handed over by another core, or written by a NIC, is not in this
/// core's cache, and its first read would stall the parse.
const FRAME_PREFETCH_AHEAD: usize = 4;

impl Engine {
    /// Decides about a chunk of at most [`MAX_BATCH`](super::MAX_BATCH) frames from `from`.
    pub(super) fn process_chunk<F: FrameBuf>(
        &mut self,
        now: Time,
        from: Side,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        self.parse(from, frames, verdicts);
        // Passes 2 and 3 read the parsed headers in place: moved out of
        // `self` for them (a pointer swap), not copied per packet.
        let metas = core::mem::take(&mut self.metas);
        self.look_up_and_decide(now, from, &metas, frames, verdicts);
        self.metas = metas;
    }

    /// Passes 2 and 3 over frames parsed into `metas` (lane `i`, frame `i`).
    #[inline]
    fn look_up_and_decide<F: FrameBuf>(
        &mut self,
        now: Time,
        from: Side,
        metas: &[Meta],
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        self.look_up(metas, frames.len(), from);
        let lanes = Lane::first(frames.len()).zip(metas).zip(frames.iter_mut().zip(verdicts.iter_mut()));
        for ((lane, m), (frame, v)) in lanes {
            if self.parsed[lane] {
                *v = self.decide(now, from, m, lane, frame);
            }
        }
    }

    /// Decides about `frames` (at most [`MAX_BATCH`](super::MAX_BATCH)),
    /// which the caller has parsed already (lane `i` of `metas` and
    /// `results` is frame `i`'s): pass 1 without the parse.
    pub(super) fn process_parsed_chunk<F: FrameBuf>(
        &mut self,
        now: Time,
        from: Side,
        frames: &mut [F],
        verdicts: &mut [Verdict],
        metas: &[Meta],
        results: &[Result<(), ParseError>],
    ) {
        self.hash_parsed(from, frames, verdicts, metas, results);
        self.look_up_and_decide(now, from, metas, frames, verdicts);
    }

    /// Pass 1 for frames parsed by the caller: the counters, a verdict for
    /// each frame that did not parse, the hash and the bucket's prefetch
    /// for each that did.
    #[inline]
    fn hash_parsed<F: FrameBuf>(
        &mut self,
        from: Side,
        frames: &[F],
        verdicts: &mut [Verdict],
        metas: &[Meta],
        results: &[Result<(), ParseError>],
    ) {
        let side = from.index();
        let Engine { parsed, hashes, ct, counters, .. } = self;
        let lanes = metas.iter().zip(parsed.iter_mut()).zip(hashes.iter_mut()).zip(results);
        for ((frame, v), (((meta, ok), hash), result)) in frames.iter().zip(verdicts.iter_mut()).zip(lanes) {
            counters.rx_packets[side] += 1;
            counters.rx_bytes[side] += frame.bytes().len() as u64;
            *ok = parsed_lane(*result, meta, hash, v, ct, counters);
        }
    }

    /// Pass 1: parse, hash, prefetch the bucket. A frame that does not
    /// parse gets its verdict here. The lane arrays are walked with
    /// iterators (no bounds check per packet).
    #[inline]
    fn parse<F: FrameBuf>(&mut self, from: Side, frames: &[F], verdicts: &mut [Verdict]) {
        let side = from.index();
        let Engine { metas, parsed, hashes, ct, counters, .. } = self;
        for f in frames.iter().take(FRAME_PREFETCH_AHEAD) {
            prefetch_headers(f.bytes());
        }
        let lanes = metas.iter_mut().zip(parsed.iter_mut()).zip(hashes.iter_mut());
        let ahead = frames.iter().skip(FRAME_PREFETCH_AHEAD).map(Some).chain(core::iter::repeat(None));
        for (((frame, v), ((meta, ok), hash)), next) in frames.iter().zip(verdicts.iter_mut()).zip(lanes).zip(ahead) {
            if let Some(next) = next {
                prefetch_headers(next.bytes());
            }
            let bytes = frame.bytes();
            counters.rx_packets[side] += 1;
            counters.rx_bytes[side] += bytes.len() as u64;
            let result = classify_into(bytes, meta);
            *ok = parsed_lane(result, meta, hash, v, ct, counters);
        }
    }

    /// Pass 2: look the first `n` lanes up, in two stages LOOKUP_AHEAD
    /// packets apart, so that the lookups of a batch wait for memory
    /// together: (a) guess the entry from its bucket (prefetched in pass 1)
    /// and fetch its flow; (b) confirm the guess against the key (or look
    /// up in full), then fetch what pass 3 reads about the flow's member
    /// (its account and, when shaping, its shaper state in this direction),
    /// or for a packet without a flow what making one will read first.
    /// With many flows and members none of it is in cache, and each would
    /// be a miss that the packet waits for alone.
    #[inline]
    fn look_up(&mut self, metas: &[Meta], n: usize, from: Side) {
        // Frames from the inside are their members' uploads (a hairpinned
        // frame is both, and its upload is shaped first).
        let dir = if from == Side::Inside { UP } else { DOWN };
        let Engine { parsed, hashes, hits, guesses, ct, accounts, shaping, policy, .. } = self;
        let metas = &metas[..n.min(metas.len()).min(MAX_BATCH)];
        let mut misses = 0;
        // Lane `i` of `metas` is lane `Lane(i)` of the engine's arrays
        // (`metas` holds at most MAX_BATCH, so the cast keeps `i`).
        let wanted = |l: Lane, m: &Meta| parsed[l] && lookup_first(m);
        for i in 0..metas.len() + LOOKUP_AHEAD {
            if let Some(m) = metas.get(i) {
                let l = Lane(i as u8);
                guesses[l] = if wanted(l, m) { ct.guess(hashes[l]) } else { NO_GUESS };
                if guesses[l] != NO_GUESS {
                    ct.prefetch_guess(guesses[l]);
                }
            }
            let Some(m) = i.checked_sub(LOOKUP_AHEAD).and_then(|j| metas.get(j)) else { continue };
            let j = Lane((i - LOOKUP_AHEAD) as u8);
            hits[j] = None;
            if wanted(j, m) {
                let found = ct.lookup_guessed(hashes[j], &m.key, guesses[j]);
                if let Some(h) = found {
                    let account = ct.flow(h.flow).account;
                    if account != NO_ACCOUNT {
                        accounts.prefetch(account);
                        if let Some(sh) = shaping {
                            sh.prefetch(account, dir);
                        }
                    }
                } else {
                    // A packet without a flow (one in a hundred) will make
                    // one in pass 3: fetch the flow it will take and the
                    // policy's entry for its source, each a miss it would
                    // otherwise wait for there (campus-10x ran 2-12 % faster).
                    ct.prefetch_free(misses);
                    misses += 1;
                    if let (Some(p), Side::Inside) = (policy.as_deref(), from) {
                        match m.key.src_ip() {
                            core::net::IpAddr::V4(a) => p.prefetch_inside_v4(a),
                            core::net::IpAddr::V6(a) => p.prefetch_inside_v6(a),
                        }
                    }
                }
                hits[j] = found;
            }
        }
        self.hits_generation = self.ct.generation();
    }

    /// Pass 3 for the parsed frame in `lane`: its stage's verdict, then
    /// shaping, then the transmit counters.
    #[inline]
    fn decide<F: FrameBuf>(&mut self, now: Time, from: Side, m: &Meta, lane: Lane, frame: &mut F) -> Verdict {
        let len = frame.bytes().len();
        let (v, charge) = if let Some(frag) = m.frag {
            self.fragment(now, from, m, frag, lane, frame.bytes_mut())
        } else if let L4::IcmpError { inner, .. } = &m.l4 {
            self.related(now, from, m, frame.bytes_mut(), inner)
        } else {
            let (v, _, charge) = self.track(now, from, m, lane, frame.bytes_mut());
            (v, charge)
        };
        let v = match (v, charge) {
            (Verdict::Forward(to), Some(charge)) => {
                self.shape(now, charge, to, frame.bytes(), self.hashes[lane], m.ecn)
            }
            _ => v,
        };
        if let Verdict::Forward(to) = v {
            self.counters.tx_packets[to.index()] += 1;
            self.counters.tx_bytes[to.index()] += len as u64;
        }
        v
    }

    /// Offers a frame forwarded `to` on a member's flow to the member's
    /// shaper in the charged direction, if shaping is on and the member is
    /// shaped that way: the shaper passes it (forward now), holds it or
    /// drops it. A member's flags are learnt from the policy on its first
    /// packet.
    #[inline]
    fn shape(&mut self, now: Time, charge: Charge, to: Side, frame: &[u8], flow_hash: u64, ecn: u8) -> Verdict {
        let Some(sh) = &mut self.shaping else { return Verdict::Forward(to) };
        let Charge { account, dir } = charge;
        let mut flags = self.accounts.shaping(account);
        if !Shaping::known(flags) {
            if let Some(p) = &self.policy {
                flags = sh.refresh(now.0, account, self.accounts.member_id(account), p, &mut self.counters);
                self.accounts.set_shaping(account, flags);
            }
        }
        if !Shaping::shaped(flags, dir) {
            return Verdict::Forward(to);
        }
        match sh.offer(now.0, account, dir, to, frame, flow_hash, ecn, &mut self.counters) {
            None => Verdict::Forward(to),
            Some(Ok(())) => Verdict::Held,
            Some(Err(r)) => self.drop(r),
        }
    }
}

/// The end of pass 1 for one lane, given its parse: a frame that parsed
/// gets its hash and its bucket on the way to the cache; one that did not,
/// its verdict and its count. Returns whether it parsed.
#[inline]
fn parsed_lane(
    result: Result<(), ParseError>,
    meta: &Meta,
    hash: &mut u64,
    verdict: &mut Verdict,
    ct: &crate::conntrack::Conntrack,
    counters: &mut crate::counters::Counters,
) -> bool {
    match result {
        Ok(()) => {
            if lookup_first(meta) {
                *hash = ct.hash(&meta.key);
                ct.prefetch_bucket(*hash);
            }
            true
        }
        Err(e) => {
            let r = DropReason::Malformed(e);
            counters.drop(r);
            *verdict = Verdict::Drop(r);
            false
        }
    }
}

/// Packets whose own key is looked up in pass 2: everything with a
/// transport key (non-first fragments and ICMP errors are handled apart).
#[inline]
fn lookup_first(m: &Meta) -> bool {
    !matches!(m.l4, L4::IcmpError { .. } | L4::Fragment)
}

/// Frames parsed before they reach the engine, by a caller that needed
/// their headers anyway (the dataplane's steering), so that the engine does
/// not parse them again: lane `i` holds frame `i`'s parse. Made once for a
/// batch size, reused for every batch.
#[derive(Debug)]
pub struct Parsed {
    metas: Box<[Meta]>,
    results: Box<[Result<(), ParseError>]>,
}

impl Parsed {
    /// Lanes for batches of up to `lanes` frames.
    pub fn new(lanes: usize) -> Parsed {
        Parsed { metas: vec![Meta::EMPTY; lanes].into(), results: vec![Err(ParseError::Truncated); lanes].into() }
    }

    /// Lanes: the most frames one call can take.
    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    /// Parses `frame` into lane `i` and returns its parse.
    #[inline]
    pub fn parse(&mut self, i: usize, frame: &[u8]) -> Result<&Meta, ParseError> {
        let meta = &mut self.metas[i];
        let result = classify_into(frame, meta);
        self.results[i] = result;
        result.map(|()| &*meta)
    }

    /// Lane `i`'s parse, if its frame parsed.
    #[inline]
    pub fn meta(&self, i: usize) -> Option<&Meta> {
        self.results.get(i)?.ok()?;
        self.metas.get(i)
    }

    /// Moves lane `from`'s parse to lane `to`, for a batch whose frame
    /// `from` became frame `to` (the frames before it went elsewhere).
    #[inline]
    pub fn keep(&mut self, from: usize, to: usize) {
        if from != to {
            self.metas[to] = self.metas[from];
            self.results[to] = self.results[from];
        }
    }

    /// The first `n` lanes in chunks of `chunk`.
    pub(super) fn chunks(
        &self,
        n: usize,
        chunk: usize,
    ) -> impl Iterator<Item = (&[Meta], &[Result<(), ParseError>])> + '_ {
        self.metas[..n].chunks(chunk).zip(self.results[..n].chunks(chunk))
    }
}

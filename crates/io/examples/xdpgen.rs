//! xdpgen: the kernel baseline's flow generator (kbgen: the same frames, the
//! same options), sending through an XDP program in live-frames mode
//! (`io::LiveFrames`) instead of an AF_PACKET socket, so that the box's
//! receiving veth gets XDP frames, as from a NIC driver, and not skbs.
//!
//! Flow f (0..F-1): member m = f % N, k = f / N, device d = k % D,
//!   forward: 10.(128+m/256).(m%256).(10+d):(1024+k) -> 198.19.1.(1+m%250):443
//!   reverse (-R): 198.19.1.(1+m%250):443 -> 198.18.0.0+1024+m:(1024+k)
//! 60-byte frames (UDP, 18 bytes of payload), sent round robin.
//!
//!   cargo build --release -p io --example xdpgen
//!   xdpgen -i IF -s SRCMAC -d DSTMAC -N members -F flows [-D devs] [-R]
//!          [-n count] [-t seconds] [-r pps] [-b batch]
//!
//! Needs root (BPF). The receiving interface must take XDP frames: veth
//! does when an XDP program is attached to it or GRO is on. A rate (-r) is
//! kept on average only, in full-speed bursts (see `chunk` below).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FRAME_LEN: usize = 60;
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn frame(smac: [u8; 6], dmac: [u8; 6], sip: u32, dip: u32, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; FRAME_LEN];
    p[..6].copy_from_slice(&dmac);
    p[6..12].copy_from_slice(&smac);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (FRAME_LEN - 14) as u16;
    let udp_len = ip_len - 20;
    {
        let ip = &mut p[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&sip.to_be_bytes());
        ip[16..20].copy_from_slice(&dip.to_be_bytes());
        let c = checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p[34..36].copy_from_slice(&sport.to_be_bytes());
    p[36..38].copy_from_slice(&dport.to_be_bytes());
    p[38..40].copy_from_slice(&udp_len.to_be_bytes());
    p[42..60].copy_from_slice(b"kbase-baseline-pkt");
    let pseudo = (sip >> 16) + (sip & 0xffff) + (dip >> 16) + (dip & 0xffff) + 17 + u32::from(udp_len);
    let c = match checksum(&p[34..60], pseudo) {
        0 => 0xffff,
        c => c,
    };
    p[40..42].copy_from_slice(&c.to_be_bytes());
    p
}

fn mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16)).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

fn usage(what: &str) -> ! {
    eprintln!("xdpgen: {what}\nusage: xdpgen -i IF -s SRCMAC -d DSTMAC -N members -F flows [-D devs] [-R] [-n count] [-t seconds] [-r pps] [-b batch]");
    std::process::exit(2)
}

/// The interface's transmitted-frames counter (this network namespace's sysfs).
fn tx_packets(ifname: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/tx_packets")).ok()?.trim().parse().ok()
}

/// Whether `e` is a system call cut short by a signal (EINTR).
fn interrupted(e: &io::IoError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|s| s.raw_os_error() == Some(libc::EINTR))
}

fn bad<T>(opt: &str, value: &str) -> T {
    usage(&format!("bad value for {opt}: {value:?}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut ifname, mut smac, mut dmac) = (None, [0u8; 6], [0u8; 6]);
    let (mut n, mut flows, mut devs, mut count, mut batch) = (1000u64, 200_000u64, 2u64, 0u64, 64u32);
    let (mut secs, mut rate, mut reverse) = (0f64, 0f64, false);
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        if opt == "-R" {
            reverse = true;
            continue;
        }
        let Some(v) = it.next() else { usage(&format!("{opt} needs a value")) };
        match opt.as_str() {
            "-i" => ifname = Some(v.clone()),
            "-s" => smac = mac(v).unwrap_or_else(|| bad(opt, v)),
            "-d" => dmac = mac(v).unwrap_or_else(|| bad(opt, v)),
            "-N" => n = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-F" => flows = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-D" => devs = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-n" => count = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-t" => secs = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-r" => rate = v.parse().unwrap_or_else(|_| bad(opt, v)),
            "-b" => batch = v.parse().unwrap_or_else(|_| bad(opt, v)),
            _ => usage(&format!("unknown option {opt}")),
        }
    }
    let Some(ifname) = ifname else { usage("-i is required") };
    if n < 1 || flows < n || devs < 1 || !(1..=256).contains(&batch) || flows > io::xdp::live::MAX_FRAMES as u64 {
        usage("need 1 <= N <= F <= 4194304, D >= 1, 1 <= batch <= 256");
    }
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|f| {
            let (m, k) = (f % n, f / n);
            let d = k % devs;
            let private = (10u32 << 24) | ((128 + (m >> 8) as u32) << 16) | (((m & 255) as u32) << 8) | (10 + d as u32);
            let server = (198u32 << 24) | (19 << 16) | (1 << 8) | (1 + (m % 250) as u32);
            let public = ((198u32 << 24) | (18 << 16)) + 1024 + m as u32;
            let client_port = (1024 + k) as u16;
            if reverse {
                frame(smac, dmac, server, public, 443, client_port)
            } else {
                frame(smac, dmac, private, server, client_port, 443)
            }
        })
        .collect();
    let live = io::LiveFrames::new(&ifname, &frames).unwrap_or_else(|e| {
        eprintln!("xdpgen: {e}");
        std::process::exit(1)
    });
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let tx_before = tx_packets(&ifname).unwrap_or(0);
    let t0 = Instant::now();
    let end = (secs > 0.0).then(|| t0 + Duration::from_secs_f64(secs));
    // Frames per call. Each live-frames test run first sets up its page
    // pool, which takes milliseconds (about 17 ms measured here), so calls
    // must be large: about 2 s of frames at full rate (a signal ends one
    // early). A rate (-r) is therefore kept only on average, in bursts of
    // 20 ms at full speed: not what a box sees, so the side-by-side does
    // not offer limited rates with this generator.
    let chunk = if rate > 0.0 { ((rate / 50.0) as u64).clamp(1, 1 << 22) } else { 1 << 22 };
    let (mut sent, mut errors) = (0u64, 0u64);
    while !STOP.load(Ordering::Relaxed) {
        let mut want = if count > 0 { chunk.min(count - sent) } else { chunk };
        if let Some(end) = end {
            let (now, elapsed) = (Instant::now(), t0.elapsed().as_secs_f64());
            if now >= end {
                break;
            }
            // With -t, no call may run far past the end: sized by the rate
            // so far (a first short call measures it).
            let rate_so_far = if sent == 0 { 0.0 } else { sent as f64 / elapsed.max(1e-6) };
            let left = (rate_so_far * (end - now).as_secs_f64()) as u64;
            want = want.min(if sent == 0 { 1 << 16 } else { left.max(64) });
        }
        if want == 0 {
            break;
        }
        match live.send(want as u32, batch) {
            Ok(()) => sent += want,
            // A signal: the interrupted call's frames are not counted.
            Err(e) if interrupted(&e) => break,
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("xdpgen: {e}");
                }
                if errors > 100 {
                    break;
                }
            }
        }
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    // The program's own count includes a call a signal cut short.
    let sent = live.sent().unwrap_or(sent);
    let took = tx_packets(&ifname).map(|after| after.saturating_sub(tx_before));
    eprintln!(
        "xdpgen: sent {sent} pkts in {dt:.2}s ({:.0} pps), send errors {errors}; {ifname} transmitted {}",
        sent as f64 / dt.max(1e-9),
        took.map_or("(tx_packets unreadable)".to_owned(), |t| t.to_string()),
    );
    if took.is_some_and(|t| t < sent / 2) {
        eprintln!(
            "xdpgen: {ifname} passed on fewer than half of the frames: its peer must take XDP frames \
             (veth: an XDP program or GRO on the peer; the peer up)"
        );
    }
}

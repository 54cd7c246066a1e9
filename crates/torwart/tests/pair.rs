//! Two boxes as a pair, end to end (`torwart lab --pair`, in
//! `torwart::lab::pair`): connections made through box `a` go on through
//! box `b` after `a` is killed (`kill -9`, with its keepalived and links),
//! and through `a` again after its return, with the same public source
//! ports and no reset, because each box holds the other's state; the
//! member's usage is written once, within a second of traffic. Needs root
//! and keepalived (`.ci/run` installs it); elsewhere it says "skipped".

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use torwart::lab::pair::{self, PairOptions};

#[test]
fn connections_survive_a_kill_of_the_active_box_and_its_return() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root");
        return;
    }
    if !torwart::lab::on_path("keepalived") {
        assert!(std::env::var_os("CI").is_none(), "keepalived is missing (.ci/run installs it)");
        println!("skipped: keepalived is not installed");
        return;
    }
    torwart::lab::preflight(false).expect("the lab's tools");
    let p = format!("twp{}", std::process::id() % 10000);
    let opts = PairOptions {
        torwart: PathBuf::from(env!("CARGO_BIN_EXE_torwart")),
        prefix: p.clone(),
        dir: std::env::temp_dir().join(format!("torwart-pair-{p}")),
        chatty: 50,
        idle: 200,
        bulk: 4000,
        verbose: true,
    };
    let r = pair::run(&opts, &AtomicBool::new(false)).expect("the pair's lab runs");
    pair::print(&r);
    assert!(r.passed(), "failed: {:#?}\n{}", r.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(), r.logs);
    assert!(r.outages.len() == 50 && r.resync_s < 5.0, "{:?} {}", r.outages, r.resync_s);
    assert!(r.resync_flows >= 2000, "b held {} flows when a returned", r.resync_flows);
    let _ = std::fs::remove_dir_all(&opts.dir);
}

//! One box under attack, end to end (`torwart lab --attack`, in
//! `torwart::lab::attack`, the short version): a SYN flood at a port
//! forward that fills the flow table, a member scanning past its NAT quota
//! with forged sources among its frames, blind RSTs and SYNs on established
//! connections and forged ICMP errors, and a reload storm; legitimate new
//! connections succeed, established ones are never lost, and a UDP stream
//! loses nothing; then a kill -9 and restart of torwart, after which the
//! connections go on with the same NAT ports. Needs root and sqlite3 (`.ci/run` installs it); elsewhere
//! it says "skipped".

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use torwart::lab::attack::{self, AttackOptions};

#[test]
fn a_box_under_attack_keeps_its_members_connections() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root");
        return;
    }
    if !torwart::lab::on_path("sqlite3") {
        assert!(std::env::var_os("CI").is_none(), "sqlite3 is missing (.ci/run installs it)");
        println!("skipped: sqlite3 is not installed");
        return;
    }
    torwart::lab::preflight(false).expect("the lab's tools");
    let p = format!("twa{}", std::process::id() % 10000);
    let opts = AttackOptions {
        torwart: PathBuf::from(env!("CARGO_BIN_EXE_torwart")),
        prefix: p.clone(),
        dir: std::env::temp_dir().join(format!("torwart-attack-{p}")),
        full: false,
        soak_seconds: None,
        verbose: true,
    };
    let r = attack::run(&opts, &AtomicBool::new(false)).expect("the attack lab runs");
    attack::print(&r);
    assert!(r.passed(), "failed: {:#?}\n{}", r.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(), r.logs);
    assert_eq!(r.checks.len(), 17, "every phase reported");
    let _ = std::fs::remove_dir_all(&opts.dir);
}

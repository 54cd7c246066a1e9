//! The control plane's parsers of files an operator (or an attacker with
//! write access to a path) hands it: member database imports (JSON and
//! each table's CSV), the daemon's configuration (TOML) and the usage
//! spool (JSON lines). Errors are fine (and their messages are formatted);
//! panics, hangs and unbounded memory are not.
//!
//! Input: one mode byte, then the file.
//! - mode % 4 == 0: a JSON import (`members.json`);
//! - mode % 4 == 1: a CSV import of table `TABLES[(mode / 4) % 8]`;
//! - mode % 4 == 2: a configuration (`torwart.toml`);
//! - mode % 4 == 3: a usage spool.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run control` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const TABLES: [&str; 8] = [
    "plans",
    "members",
    "member_addresses",
    "public_addresses",
    "port_forwards",
    "ipv6_openings",
    "networks",
    "global_blocks",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Err(e) = control::db::parse_import(Path::new("members.json"), file) {
                let _ = e.to_string();
            }
        }
        1 => {
            let name = format!("{}.csv", TABLES[usize::from(mode / 4) % TABLES.len()]);
            if let Err(e) = control::db::parse_import(Path::new(&name), file) {
                let _ = e.to_string();
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(file) {
                let _ = control::config::Config::parse(text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(file) {
                match control::spool::parse(Path::new("usage.spool"), text) {
                    Ok(records) => assert!(records.len() <= text.lines().count()),
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
    }
});

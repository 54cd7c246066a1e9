//! `torwart man DIR`: the manual pages, made from the command line's own
//! definition (clap) so that they cannot drift from it.
//!
//! One page per command: `torwart.1`, and `torwart-<subcommand>.1` for every
//! subcommand that is not hidden, nested ones included (`torwart-db-init.1`).
//! Each is clap_mangen's page (name, synopsis, description, options,
//! subcommands, version) followed by what clap has no place for: a SEE ALSO
//! linking the pages, and for `torwart run` its signals, exit status and
//! files as the Debian package lays them out (docs/packaging.md). The pages
//! carry no date, so the same binary always writes the same bytes.

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes the pages of `cmd` and its visible subcommands into `dir`
/// (created if missing); returns the files written, the top page first.
pub fn write(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut top = cmd.disable_help_subcommand(true);
    top.build();
    let mut pages = Vec::new();
    collect(&top, &mut pages);
    let names: Vec<String> = pages.iter().map(page_name).collect();
    let source = format!("torwart {}", top.get_version().unwrap_or_default());
    let mut written = Vec::new();
    for (cmd, name) in pages.into_iter().zip(&names) {
        let see_also: Vec<&str> =
            if *name == names[0] { names[1..].iter().map(String::as_str).collect() } else { vec![names[0].as_str()] };
        let mut page = Vec::new();
        Man::new(cmd).source(source.as_str()).render(&mut page)?;
        extra_sections(name).to_writer(&mut page)?;
        see_also_section(&see_also).to_writer(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page)?;
        // Documentation, not data: readable by all whatever the umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd` and its visible subcommands, depth first, parents before children.
fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

/// `torwart`, `torwart-run`, `torwart-db-init`: what clap calls the display name once built.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_owned()
}

fn see_also_section(pages: &[&str]) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut refs = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        refs.push(bold(*page));
        refs.push(roman(if i + 1 < pages.len() { "(1), " } else { "(1)" }));
    }
    roff.text(refs);
    roff
}

/// The sections a page adds to clap's.
fn extra_sections(page: &str) -> Roff {
    let mut roff = Roff::new();
    if page != "torwart-run" {
        return roff;
    }
    let item = |roff: &mut Roff, tag: &str, text: &str| {
        roff.control("TP", []).text([bold(tag)]).text([roman(text)]);
    };
    roff.control("SH", ["SIGNALS"]);
    item(
        &mut roff,
        "SIGTERM, SIGINT",
        "Stop: drain the workers, write the usage a last time, exit. A second signal forces the exit.",
    );
    item(&mut roff, "SIGHUP", "Reload the member database now (changes are otherwise picked up within a second).");
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "Stopped cleanly."),
        ("2", "The configuration cannot be read or is not valid, or the system refuses it (the kernel forwards)."),
        ("3", "A port cannot be set up (no such interface, the XDP program or socket refused)."),
        ("4", "Not permitted: capabilities missing (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF)."),
        ("5", "The member database: unreachable or invalid at start, or the usage was spooled at the stop."),
        ("6", "Another system error (the route mirror, threads)."),
    ] {
        item(&mut roff, code, what);
    }
    roff.control("SH", ["FILES"]);
    for (file, what) in [
        (
            "/etc/torwart/torwart.toml",
            "The configuration (--config); every field is explained in the example installed with it.",
        ),
        ("/var/lib/torwart/", "The state directory: the SQLite member database, the usage spool."),
        (
            "/run/torwart/stats.json",
            "The stats file where the example configuration puts it ([stats] file): counters and usage per member \
             (mode 0640: personal data).",
        ),
        ("/run/torwart/api.sock", "The API socket ([api] socket, mode 0660)."),
    ] {
        item(&mut roff, file, what);
    }
    roff.control("PP", []).text([
        roman("The Debian package runs this command as the unit "),
        italic("torwart.service"),
        roman(", as the user torwart with only the capabilities it needs (/usr/share/doc/torwart/packaging.md)."),
    ]);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("torwart")
            .version("1.2.3")
            .about("A gateway")
            .subcommand(clap::Command::new("run").about("Runs").arg(clap::arg!(--config <FILE> "The file")))
            .subcommand(clap::Command::new("db").subcommand(clap::Command::new("init").about("Creates")))
            .subcommand(clap::Command::new("man").hide(true))
    }

    #[test]
    fn every_visible_command_gets_a_page_that_links_the_others() {
        let dir = std::env::temp_dir().join(format!("torwart-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = write(cli(), &dir).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["torwart.1", "torwart-run.1", "torwart-db.1", "torwart-db-init.1"]);
        let top = std::fs::read_to_string(&written[0]).unwrap();
        assert!(top.contains(".TH torwart 1  \"torwart 1.2.3\""), "{top}");
        assert!(top.contains("\\fBtorwart\\-db\\-init\\fR(1)"), "{top}");
        let run = std::fs::read_to_string(&written[1]).unwrap();
        assert!(run.contains("\\-\\-config") && run.contains(".SH \"EXIT STATUS\""), "{run}");
        // The same command writes the same bytes.
        write(cli(), &dir).unwrap();
        assert_eq!(std::fs::read_to_string(&written[1]).unwrap(), run);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

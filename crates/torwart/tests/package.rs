//! The Debian package (docs/packaging.md), as `scripts/package` builds it,
//! checked from the outside with dpkg-deb.
//!
//! No release build: the package is made of this test's own debug binary
//! (`TORWART_BIN`, stripped, with fast compression), which has the same
//! CLI and man pages as a release one. Then: the control fields and
//! maintainer scripts, every file with its mode and owner (the binary, the
//! unit, the sysusers file, the conffile 0640, a man page per command, the
//! docs), the unit through `systemd-analyze verify`, the man page through
//! `man` (or at least its header), and the extracted binary runs.
//!
//! Needs cargo-deb and dpkg-deb; without them it says "skipped", except in
//! CI (`CI=true`), where that is a failure (.ci/run installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_torwart");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// True if `program args` runs and succeeds.
fn found(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, which must succeed; its output.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

/// `dpkg-deb -c`: path (without the leading "."), (mode string, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    stdout(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').trim_end_matches('/').to_owned();
            (path, (f[0].to_owned(), f[1].to_owned()))
        })
        .collect()
}

#[test]
fn the_debian_package_holds_the_binary_unit_conffile_and_man_pages() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let tools: [(&str, &str, &[&str]); 2] =
        [("cargo-deb", "cargo", &["deb", "--version"]), ("dpkg-deb", "dpkg-deb", &["--version"])];
    for (tool, program, args) in tools {
        if !found(program, args) {
            assert!(!ci, "{tool} is missing in CI: .ci/run installs it");
            eprintln!("skipped: {tool} is missing (cargo install --locked cargo-deb; apt-get install dpkg-dev)");
            return;
        }
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();

    // Build it as an operator would, from this test's binary.
    run(Command::new(workspace().join("scripts/package"))
        .args(["--strip", "--fast", "--quiet", "--output"])
        .arg(&out)
        .env("TORWART_BIN", BIN)
        // The stage beside the binary: hard links instead of copies.
        .env("TMPDIR", env!("CARGO_TARGET_TMPDIR")));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    let deb = &debs[0];

    // Control fields.
    let control = stdout(Command::new("dpkg-deb").arg("-f").arg(deb));
    for field in ["Package: torwart", "Section: net", "Depends: libc6", "systemd-sysusers"] {
        assert!(control.contains(field), "{field:?} not in the control file:\n{control}");
    }

    // Files, modes, owners.
    let files = contents(deb);
    let expect = |path: &str, mode: &str| {
        let (m, owner) = files.get(path).unwrap_or_else(|| panic!("{path} not in the package: {files:#?}"));
        assert_eq!((m.as_str(), owner.as_str()), (mode, "0/0"), "{path}");
    };
    expect("/usr/bin/torwart", "-rwxr-xr-x");
    expect("/usr/lib/systemd/system/torwart.service", "-rw-r--r--");
    expect("/usr/lib/sysusers.d/torwart.conf", "-rw-r--r--");
    // /run/torwart from boot: keepalived's track file lives there.
    expect("/usr/lib/tmpfiles.d/torwart.conf", "-rw-r--r--");
    // The configuration may hold a database password: not world-readable
    // (postinst gives it to the group torwart).
    expect("/etc/torwart/torwart.toml", "-rw-r-----");
    for doc in ["README.md", "packaging.md", "copyright", "examples/torwart.toml"] {
        expect(&format!("/usr/share/doc/torwart/{doc}"), "-rw-r--r--");
    }
    expect("/usr/share/torwart/prometheus/torwart-alerts.yml", "-rw-r--r--");
    expect("/usr/share/torwart/grafana/torwart-dashboard.json", "-rw-r--r--");
    // A man page for every command, as `torwart man` makes them.
    let pages = stdout(Command::new(BIN).arg("man").arg(dir.join("man")));
    let pages: Vec<&str> = pages.lines().map(|p| p.rsplit('/').next().unwrap()).collect();
    assert!(pages.contains(&"torwart.1") && pages.contains(&"torwart-run.1"), "{pages:?}");
    for page in &pages {
        expect(&format!("/usr/share/man/man1/{page}.gz"), "-rw-r--r--");
    }
    for (path, (mode, _)) in &files {
        assert!(["/usr", "/etc"].iter().any(|top| Path::new(path).starts_with(top)), "{path} outside /usr and /etc");
        assert_ne!(mode.as_bytes()[8], b'w', "{path} is world-writable: {mode}");
    }

    // Maintainer scripts: the conffile, the user, the statoverrides.
    let ctrl = dir.join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));
    let read = |name: &str| std::fs::read_to_string(ctrl.join(name)).unwrap();
    assert_eq!(read("conffiles").trim(), "/etc/torwart/torwart.toml");
    let postinst = read("postinst");
    for step in [
        "systemd-sysusers",
        "systemd-tmpfiles --create",
        "torwart.conf",
        "--add root torwart \"$mode\"",
        "0640 /etc/torwart/torwart.toml",
        "-m 0750 /var/lib/torwart",
    ] {
        assert!(postinst.contains(step), "{step:?} not in postinst:\n{postinst}");
    }
    assert!(!postinst.contains("#DEBHELPER#"), "an unreplaced token in postinst:\n{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke"), "postinst starts or restarts the gateway:\n{postinst}");

    // The extracted files.
    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let bin = root.join("usr/bin/torwart");
    let version = stdout(Command::new(&bin).arg("--version"));
    assert_eq!(version.trim(), format!("torwart {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        std::fs::read(root.join("etc/torwart/torwart.toml")).unwrap(),
        std::fs::read(workspace().join("docs/torwart.example.toml")).unwrap()
    );

    // The unit starts what the CLI takes, as the user and with the capabilities it says.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/torwart.service")).unwrap();
    let exec = "ExecStart=/usr/bin/torwart run --config /etc/torwart/torwart.toml";
    for line in [
        exec,
        "User=torwart",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK",
        "StateDirectory=torwart",
        "RuntimeDirectory=torwart",
        "RuntimeDirectoryMode=0750",
        "UMask=0027",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} not in the unit:\n{unit}");
    }
    let help = stdout(Command::new(&bin).args(["help", "run"]));
    assert!(help.contains("--config") && help.contains("/etc/torwart/torwart.toml"), "{help}");
    if found("systemd-analyze", &["--version"]) {
        // verify wants ExecStart's binary where it says: point it at the extracted one.
        let checked = dir.join("verify/torwart.service");
        std::fs::create_dir_all(checked.parent().unwrap()).unwrap();
        let with_bin = format!("ExecStart={} run --config /etc/torwart/torwart.toml", bin.display());
        std::fs::write(&checked, unit.replace(exec, &with_bin)).unwrap();
        let out = run(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&checked));
        // Unknown keys and values are only warned about: none is allowed.
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "systemd-analyze verify: {warnings}");
    } else {
        assert!(!ci, "systemd-analyze is missing in CI: .ci/run installs it");
        eprintln!("systemd-analyze is missing: the unit is not verified");
    }

    // The man page renders (or at least opens as one).
    let page = root.join("usr/share/man/man1/torwart-run.1.gz");
    if found("man", &["--version"]) {
        let out = run(Command::new("man").arg("-l").arg(&page).env("MANWIDTH", "80"));
        let text = String::from_utf8_lossy(&out.stdout);
        for section in ["NAME", "SYNOPSIS", "--config", "EXIT STATUS", "SIGHUP", "SEE ALSO"] {
            assert!(text.contains(section), "{section:?} not in the rendered page:\n{text}");
        }
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "man: {warnings}");
    } else {
        let text = stdout(Command::new("gzip").arg("-dc").arg(&page));
        assert!(text.contains(".TH torwart-run 1"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

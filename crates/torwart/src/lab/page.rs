//! The lab's look at the box's web page, in headless Chromium (Debian
//! package `chromium`), as an operator's browser would load it: while a
//! member downloads, the page is loaded twice a few seconds apart; its
//! live numbers must be there, its polls must have succeeded
//! (`data-updated` on `<body>`), and the traffic figure must differ between
//! the loads. Screenshots of the overview and of a member's page are saved
//! in the lab's directory (`docs/` shows them).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What two loads of the page showed.
#[derive(Debug, Default)]
pub struct Seen {
    /// Polls that succeeded in each load.
    pub updated: [u64; 2],
    /// The overview's download figure (bit/s) in each load.
    pub down: [String; 2],
    /// Fields present in the first load (by id).
    pub missing: Vec<&'static str>,
}

/// The ids the page's script fills (crates/control/assets/app.js lists them).
pub const FIELDS: &[&str] =
    &["up-bps", "down-bps", "flows", "generation", "top-members", "drops", "timeouts", "reloads"];

pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| super::on_path(b))
}

/// Loads the page at `page` twice, `apart`; saves screenshots into `dir`.
pub fn look(browser: &str, page: SocketAddr, apart: Duration, dir: &Path) -> Result<Seen, String> {
    let url = format!("http://{page}/");
    let mut seen = Seen::default();
    for i in 0..2 {
        if i == 1 {
            std::thread::sleep(apart);
        }
        let dom = run(browser, &["--dump-dom", &url])?;
        seen.updated[i] = attribute(&dom, "data-updated").and_then(|v| v.parse().ok()).unwrap_or(0);
        seen.down[i] = value_of(&dom, "down-bps").unwrap_or_default();
        if i == 0 {
            seen.missing = FIELDS.iter().copied().filter(|f| !dom.contains(&format!("id=\"{f}\""))).collect();
        }
    }
    for (name, path) in [("page-overview.png", String::new()), ("page-member.png", "#/member/2".to_owned())] {
        let shot = dir.join(name);
        let arg = format!("--screenshot={}", shot.display());
        run(browser, &[&arg, "--window-size=1280,1100", &format!("{url}{path}")])?;
        if !shot.exists() {
            return Err(format!("{browser} made no screenshot {}", shot.display()));
        }
    }
    Ok(seen)
}

/// One headless run; its standard output.
fn run(browser: &str, args: &[&str]) -> Result<String, String> {
    // A throwaway profile: root's real one is not touched, and no state is
    // carried between runs.
    let profile = std::env::temp_dir().join(format!("torwart-lab-chromium-{}", std::process::id()));
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {browser}: {e}"))?;
    let _ = std::fs::remove_dir_all(&profile);
    if !out.status.success() {
        return Err(format!("{browser} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the first `name="..."` attribute in `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("{name}=\""))? + name.len() + 2;
    Some(html[at..].split('"').next()?.to_owned())
}

/// The `data-value` of the element with `id` (the raw figure the page shows).
fn value_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = html[..at].rfind('<')?;
    let tag = &html[start..at + html[at..].find('>')?];
    attribute(tag, "data-value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_dom() {
        let dom = r#"<body data-updated="4"><b data-value="1" id="x">1</b><span class="n" data-value="12500000" id="down-bps">12.5 Mbit/s</span></body>"#;
        assert_eq!(attribute(dom, "data-updated").as_deref(), Some("4"));
        assert_eq!(value_of(dom, "down-bps").as_deref(), Some("12500000"));
        assert_eq!(value_of(dom, "up-bps"), None);
    }
}

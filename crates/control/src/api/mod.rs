//! The daemon's HTTP API, `/metrics` and web page (`docs/api.md`), served
//! by axum on the control runtime, never on a worker.
//!
//! Two listeners serve the same routes: a Unix socket (the CLI's; its file
//! mode is the access control, 0660) and a TCP address (loopback by
//! default; any other needs a bearer token from `api.token_file`, checked
//! on every request in constant time). Member usage is personal data, and
//! every local user can reach a loopback address: without a token the TCP
//! listener serves the page and the totals only ([`ANONYMOUS`]; `/metrics`
//! without per-member series). Handlers read the latest
//! [`live::Snapshot`] the main loop published; only the member page reads
//! the database (its usage today and this month), and only listing flows
//! asks the workers, through their bounded queries.

pub mod json;
pub mod live;
pub mod metrics;
mod page;

use crate::config::ApiConfig;
use crate::db::Database;
use crate::sys::unix_now;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use live::Live;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lists are at most this long, whatever `limit` asks.
pub const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 100;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub live: Arc<Live>,
    /// The member database, for a member's usage today and this month
    /// (`None`: a benchmark without one).
    pub db: Option<Database>,
    pub reload_now: Arc<tokio::sync::Notify>,
    pub member_series: usize,
}

/// The serving API: its tasks, and the socket file to remove at the end.
#[derive(Debug)]
pub struct Api {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: Option<PathBuf>,
    /// Where the TCP listener is, if any (its port, when 0 was asked).
    pub listening: Option<SocketAddr>,
}

/// Why the API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("api.token_file {path}: {why}")]
    Token { path: PathBuf, why: String },
    #[error("api.listen {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("api.socket {path}: {why}")]
    Socket { path: PathBuf, why: String },
}

impl Api {
    /// Binds the listeners and serves them on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        config: &ApiConfig,
        listen: Option<SocketAddr>,
        state: ApiState,
    ) -> Result<Api, ApiError> {
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        // A torwart that already runs here is named as such, before its TCP
        // address is found taken.
        if check_socket(&config.socket)? {
            return Err(ApiError::Socket { path: config.socket.clone(), why: ANOTHER_TORWART.into() });
        }
        let routes = routes(state);
        let mut api = Api { tasks: Vec::new(), socket: None, listening: None };
        if let Some(addr) = listen {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|source| ApiError::Listen { addr, source })?;
            api.listening = listener.local_addr().ok();
            let guard = Arc::new(Guard { token, loopback: addr.ip().is_loopback() });
            let app = routes.clone().layer(axum::middleware::from_fn_with_state(guard, require_token));
            api.tasks.push(runtime.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("api: the TCP listener stopped: {e}");
                }
            }));
        }
        if !config.socket.as_os_str().is_empty() {
            let listener = runtime.block_on(async { bind_socket(&config.socket) })?;
            api.socket = Some(config.socket.clone());
            let app = routes.layer(axum::middleware::from_fn(socket_host));
            api.tasks.push(runtime.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("api: the socket listener stopped: {e}");
                }
            }));
        }
        Ok(api)
    }

    /// Stops serving and removes the socket file.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/members", get(members))
        .route("/api/members/{id}", get(member))
        .route("/api/drops", get(drops))
        .route("/api/history", get(history))
        .route("/api/reloads", get(reloads))
        .route("/api/reload", post(reload))
        .route("/api/flows", get(flows))
        .route("/api/timeouts", get(timeouts))
        .route("/metrics", get(metrics))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/style.css", get(page::style))
        .fallback(not_found)
        .with_state(state)
}

/// A request the API refuses: a status and a message, as `{"error": ...}`.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(why: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, why.into())
}

type Params = Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// The query's parameters, refusing any not in `known`.
fn params(p: Params, known: &[&str]) -> Result<BTreeMap<String, String>, Refusal> {
    let Query(p) = p.map_err(|e| bad(format!("malformed query: {e}")))?;
    if let Some(k) = p.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!("unknown parameter \"{k}\"; known: {}", known.join(", "))));
    }
    Ok(p)
}

fn number<T: std::str::FromStr>(p: &BTreeMap<String, String>, name: &str) -> Result<Option<T>, Refusal> {
    p.get(name).map(|v| v.parse().map_err(|_| bad(format!("{name}={v}: not a number")))).transpose()
}

/// `limit` and `offset`.
fn page(p: &BTreeMap<String, String>) -> Result<(usize, usize), Refusal> {
    let limit = number(p, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit={limit}: give 1 to {MAX_LIMIT}")));
    }
    Ok((limit, number(p, "offset")?.unwrap_or(0)))
}

async fn status(State(s): State<ApiState>) -> Json<json::StatusDoc> {
    Json(json::status(&s.live.snapshot.load(), s.live.started.elapsed().as_secs(), &s.live.reload_counts))
}

async fn members(State(s): State<ApiState>, q: Params) -> Result<Json<json::MembersDoc>, Refusal> {
    let p = params(q, &["sort", "limit", "offset"])?;
    let (limit, offset) = page(&p)?;
    let sort = match p.get("sort").map(String::as_str) {
        None | Some("rate") => json::Sort::Rate,
        Some("usage") => json::Sort::Usage,
        Some("id") => json::Sort::Id,
        Some(other) => return Err(bad(format!("sort={other}: give rate, usage or id"))),
    };
    let all = json::members(&s.live.snapshot.load(), &s.live.members.load(), sort);
    let total = all.len();
    let members = all.into_iter().skip(offset).take(limit).collect();
    Ok(Json(json::MembersDoc { total, offset, members }))
}

async fn member(State(s): State<ApiState>, UrlPath(id): UrlPath<String>) -> Result<Json<json::MemberPage>, Refusal> {
    let id: u32 = id.parse().map_err(|_| bad(format!("member \"{id}\": not a member id")))?;
    let db = s.live.members.load_full();
    let found = json::members(&s.live.snapshot.load(), &db, json::Sort::Id).into_iter().find(|m| m.member_id == id);
    let Some(m) = found else {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no member {id}")));
    };
    let now = unix_now();
    let (today, month) = (day_start(now), month_start(now));
    let unavailable = |why: String| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("member database: {why}"));
    let db_ = s.db.as_ref().ok_or_else(|| unavailable("none".into()))?;
    let usage = db_.usage_since(id, month.min(today)).await.map_err(|e| unavailable(e.to_string()))?;
    let sum = |since: i64| {
        usage.iter().filter(|p| p.period_start >= since).fold(json::Usage::default(), |u, p| json::Usage {
            up_bytes: u.up_bytes + p.up_bytes,
            down_bytes: u.down_bytes + p.down_bytes,
        })
    };
    Ok(Json(json::member_page(m, &db, sum(today), sum(month))))
}

#[derive(Serialize)]
struct Drops {
    total: BTreeMap<String, u64>,
    history: Vec<DropSample>,
}

#[derive(Serialize)]
struct DropSample {
    t: i64,
    drops: BTreeMap<String, f64>,
}

async fn drops(State(s): State<ApiState>) -> impl IntoResponse {
    let total = s.live.snapshot.load().drops();
    let h = s.live.history.lock().unwrap_or_else(|e| e.into_inner());
    let history = h.iter().map(|x| DropSample { t: x.t, drops: x.drops.clone() }).collect();
    Json(Drops { total, history })
}

async fn history(State(s): State<ApiState>) -> impl IntoResponse {
    let h = s.live.history.lock().unwrap_or_else(|e| e.into_inner());
    Json(serde_json::json!({ "samples": *h }))
}

async fn reloads(State(s): State<ApiState>) -> impl IntoResponse {
    let r = s.live.reloads.lock().unwrap_or_else(|e| e.into_inner());
    Json(serde_json::json!({ "reloads": *r }))
}

async fn reload(State(s): State<ApiState>) -> impl IntoResponse {
    tracing::info!("api: reload asked for");
    s.reload_now.notify_one();
    Json(serde_json::json!({ "requested": true }))
}

/// How long a flow listing may take: the workers answer between batches.
const FLOWS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

async fn flows(State(s): State<ApiState>, q: Params) -> Result<Json<json::FlowsDoc>, Refusal> {
    let p = params(q, &["member", "address", "port", "protocol", "state", "limit"])?;
    let (limit, _) = page(&p)?;
    let address = p
        .get("address")
        .map(|a| a.parse().map_err(|_| bad(format!("address={a}: not an IPv4 or IPv6 address"))))
        .transpose()?;
    let protocol = match p.get("protocol") {
        None => None,
        Some(name) => Some(
            json::protocol_number(name)
                .ok_or_else(|| bad(format!("protocol={name}: give tcp, udp, icmp, icmpv6 or a number")))?,
        ),
    };
    let filter = dataplane::FlowFilter {
        member: number(&p, "member")?,
        address,
        port: number(&p, "port")?,
        protocol,
        state: p.get("state").cloned(),
    };
    let Some(queries) = s.live.flows.load_full() else {
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "the workers are not running".into()));
    };
    let asked = tokio::task::spawn_blocking(move || queries.query(&filter, limit, FLOWS_DEADLINE)).await;
    let asked = asked.map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match asked {
        Ok((flows, truncated)) => Ok(Json(json::FlowsDoc { flows: flows.iter().map(json::flow).collect(), truncated })),
        Err(e @ dataplane::QueryError::UnknownState(_)) => Err(bad(e.to_string())),
        Err(e) => Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn timeouts(State(s): State<ApiState>) -> impl IntoResponse {
    let snap = s.live.snapshot.load();
    Json(serde_json::json!({ "bounds_s": dataplane::timeouts::BOUNDS_S, "series": snap.stats.timeouts }))
}

async fn metrics(State(s): State<ApiState>, anonymous: Option<axum::Extension<Anonymous>>) -> impl IntoResponse {
    // A request nobody vouched for gets the totals, not the members.
    let series = if anonymous.is_some() { 0 } else { s.member_series };
    let text = metrics::render(&s.live, series);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE))], text)
}

async fn not_found(uri: axum::http::Uri) -> Refusal {
    Refusal(StatusCode::NOT_FOUND, format!("no such page: {}", uri.path()))
}

/// What the TCP listener checks on every request.
#[derive(Debug)]
struct Guard {
    /// The bearer token every request for data must carry, if any.
    token: Option<String>,
    /// The listener is on a loopback address: requests must name a
    /// loopback host, so that no web page the operator's browser opens can
    /// read the API by making its own name resolve to 127.0.0.1 (DNS
    /// rebinding).
    loopback: bool,
}

/// The page and its assets: no data in them, so served without the token
/// (the page sends it with each request for data; a browser cannot send
/// the header when it opens the page).
const PAGE: [&str; 3] = ["/", "/assets/app.js", "/assets/style.css"];

/// What the TCP listener serves without a token configured: the page
/// and the totals (a local Prometheus, the page's overview), no member's
/// data. Everything else (members' usage and flows, the reasons a reload
/// was refused, asking for a reload, and any route added later) needs a
/// token over TCP; operators reach it through the socket, whose group is
/// the access control (`ssh -L 9680:/run/torwart/api.sock` brings the
/// whole page to their browser).
const ANONYMOUS: [&str; 5] = ["/api/status", "/api/drops", "/api/history", "/api/timeouts", "/metrics"];

/// Marks a request that came over TCP without a token configured: what
/// it is answered holds no member's data.
#[derive(Clone, Copy, Debug)]
struct Anonymous;

async fn require_token(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    if guard.loopback && !loopback_host(req.headers().get(header::HOST)) {
        return Refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this API answers on a loopback address to loopback names only (localhost, 127.0.0.1, [::1])".into(),
        )
        .into_response();
    }
    // HEAD is answered as GET is (axum serves it from the GET route).
    let reading = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let page = reading && PAGE.contains(&req.uri().path());
    let Some(token) = guard.token.as_deref() else {
        if !(page || reading && ANONYMOUS.contains(&req.uri().path())) {
            return Refusal(
                StatusCode::FORBIDDEN,
                "member data is served over TCP only with a bearer token (api.token_file); \
                 without one, use the socket (api.socket, group torwart)"
                    .into(),
            )
            .into_response();
        }
        req.extensions_mut().insert(Anonymous);
        return next.run(req).await;
    };
    if !page {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let given = given.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            let mut r =
                Refusal(StatusCode::UNAUTHORIZED, "a bearer token is needed (api.token_file)".into()).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// The socket's check. Its group is the access control, but an operator
/// may bring it to a browser as a loopback TCP port (`ssh -L
/// 9680:/run/torwart/api.sock`): a web page the browser opens could then
/// make its own name resolve to 127.0.0.1 and read the API (DNS
/// rebinding). So the socket answers only requests that name a loopback
/// host, or the CLI's `torwart`.
async fn socket_host(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST);
    if !(loopback_host(host) || host.is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(b"torwart"))) {
        return Refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this socket answers requests for loopback names only (localhost, 127.0.0.1, [::1]) and the CLI's".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a `Host` header names a loopback host (any port: an SSH tunnel
/// may forward another). Absent (HTTP/1.0) counts as loopback: a browser
/// always sends one.
fn loopback_host(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(name, _)| name),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Equal, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token file of `config`, if it names one, as the API's start
/// does (for `torwart run --check`); the token itself is not returned.
pub fn check_token(config: &ApiConfig) -> Result<(), ApiError> {
    config.token_file.as_deref().map(read_token).transpose().map(|_| ())
}

fn read_token(path: &Path) -> Result<String, ApiError> {
    use std::os::unix::fs::MetadataExt;
    let err = |why: String| ApiError::Token { path: path.to_owned(), why };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.mode() & 0o007 != 0 {
        return Err(err(format!(
            "mode {:o} lets every local user read the token; chmod 600 (or 640, group torwart)",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > 4096 {
        return Err(err(format!("{} bytes: not a token file", meta.len())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(crate::files::unreadable(path, &e)))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("give one token of at least 16 printable characters".into()));
    }
    Ok(token.to_owned())
}

/// What the start's bind of the API socket at `path` would find
/// (`torwart run --check`): true if a running daemon answers on it (which
/// a restart replaces), false if free or stale; a path that is not a
/// socket is the start's error. Changes nothing.
pub fn check_socket(path: &Path) -> Result<bool, ApiError> {
    use std::os::unix::fs::FileTypeExt;
    if path.as_os_str().is_empty() {
        return Ok(false);
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(ApiError::Socket { path: path.to_owned(), why: NOT_A_SOCKET.into() })
        }
        Ok(_) => Ok(std::os::unix::net::UnixStream::connect(path).is_ok()),
        Err(_) => Ok(false),
    }
}

const ANOTHER_TORWART: &str = "another torwart answers on it; stop it or choose another api.socket";

const NOT_A_SOCKET: &str = "exists and is not a socket; remove it or choose another api.socket";

/// Binds the Unix socket at `path`, mode 0660. A socket file left by a
/// daemon that is gone is replaced; one a running daemon answers on is not.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |why: String| ApiError::Socket { path: path.to_owned(), why };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).map_err(|e| err(e.to_string()))?;
    }
    if check_socket(path)? {
        return Err(err(ANOTHER_TORWART.into()));
    }
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

/// The start of the UTC day of `t`.
pub fn day_start(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

/// The start of the UTC month of `t` (the proleptic Gregorian calendar).
pub fn month_start(t: i64) -> i64 {
    let days = t.div_euclid(86_400);
    let (y, m, _) = civil_from_days(days);
    days_from_civil(y, m, 1) * 86_400
}

// Howard Hinnant's algorithms for days since 1970-01-01 and back.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_start_at_utc_midnight() {
        // 2026-12-03T09:30:00Z
        let t = 1_796_290_200;
        assert_eq!(day_start(t), 1_796_256_000);
        assert_eq!(month_start(t), 1_796_083_200); // 2026-12-01
        assert_eq!(month_start(1_709_251_199), 1_706_745_600); // 2024-02-29T23:59:59Z -> 2024-02-01
        assert_eq!(month_start(0), 0);
        for days in [-800_000i64, -1, 0, 59, 10_000, 20_000, 800_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[tokio::test]
    async fn a_socket_a_running_daemon_answers_on_is_not_taken() {
        let dir = std::env::temp_dir().join(format!("torwart-api-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/api.sock");
        let first = bind_socket(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        let e = bind_socket(&path).unwrap_err().to_string();
        assert!(e.contains("another torwart answers on it"), "{e}");
        // Left by a daemon that is gone: replaced.
        drop(first);
        bind_socket(&path).unwrap();
        // Not a socket: refused, and left alone.
        let file = dir.join("file");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind_socket(&file).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One request over a real connection: the status code and the answer.
    fn ask(addr: SocketAddr, method: &str, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let length = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
        write!(c, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{length}Connection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        (answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), answer)
    }

    fn status_of(addr: SocketAddr, path: &str, host: &str, token: Option<&str>) -> u16 {
        ask(addr, "GET", path, host, token).0
    }

    fn serve(token: Option<&str>) -> (tokio::runtime::Runtime, Api, SocketAddr, PathBuf) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("torwart-api-guard-{}-{}", std::process::id(), token.is_some()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = token.map(|t| {
            let f = dir.join("token");
            std::fs::write(&f, t).unwrap();
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            f
        });
        let live = Arc::new(Live::new(Arc::new(arc_swap::ArcSwap::from_pointee(Default::default()))));
        // A member with traffic, whose series /metrics may or may not show.
        let mut stats = crate::stats::Stats::default();
        stats.members.push(crate::db::MemberTraffic { member_id: 7, up_bytes: 100, ..Default::default() });
        live.publish(stats, std::time::Instant::now(), 1, None);
        let state = ApiState { live, db: None, reload_now: Arc::new(tokio::sync::Notify::new()), member_series: 10 };
        let config = ApiConfig { socket: PathBuf::new(), token_file, ..Default::default() };
        let api = Api::start(&runtime, &config, Some(SocketAddr::from(([127, 0, 0, 1], 0))), state).unwrap();
        let addr = api.listening.unwrap();
        (runtime, api, addr, dir)
    }

    /// On a loopback address, a request that names another host (a web
    /// page whose name now resolves to 127.0.0.1: DNS rebinding) is refused.
    #[test]
    fn on_loopback_only_loopback_names_are_answered() {
        let (_runtime, api, addr, dir) = serve(None);
        let port = addr.port();
        for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "[::1]:8000".into(), "LOCALHOST".into()]
        {
            assert_eq!(status_of(addr, "/api/status", &host, None), 200, "{host}");
        }
        for host in [format!("evil.example:{port}"), "evil.example".into(), "192.0.2.1:9680".into(), "[::1".into()] {
            assert_eq!(status_of(addr, "/api/status", &host, None), 421, "{host}");
            assert_eq!(status_of(addr, "/", &host, None), 421, "{host}");
        }
        api.stop();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With a token, the page and its assets (no data in them) load without
    /// it, as a browser opens them; everything else needs it.
    #[test]
    fn with_a_token_the_page_loads_and_the_data_needs_it() {
        let token = "0123456789abcdef0123456789abcdef";
        let (_runtime, api, addr, dir) = serve(Some(token));
        let host = format!("127.0.0.1:{}", addr.port());
        for page in ["/", "/?token=x", "/assets/app.js", "/assets/style.css"] {
            assert_eq!(status_of(addr, page, &host, None), 200, "{page}");
        }
        for data in ["/api/status", "/api/members", "/metrics", "/assets/other.js", "/index.html"] {
            assert_eq!(status_of(addr, data, &host, None), 401, "{data}");
        }
        assert_eq!(status_of(addr, "/api/status", &host, Some(token)), 200);
        api.stop();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Every local user can reach a loopback listener: without a token it
    /// serves the page and the totals, and no member's data (usage, flows,
    /// reasons for refused reloads), nor a reload; with a token, all of it.
    #[test]
    fn without_a_token_tcp_serves_totals_and_no_member() {
        let (_runtime, api, addr, dir) = serve(None);
        let host = format!("127.0.0.1:{}", addr.port());
        for open in ["/", "/assets/app.js", "/api/status", "/api/drops", "/api/history", "/api/timeouts", "/metrics"] {
            assert_eq!(status_of(addr, open, &host, None), 200, "{open}");
        }
        for closed in ["/api/members", "/api/members/7", "/api/flows", "/api/reloads", "/api/members/", "/api/nothing"]
        {
            let (code, answer) = ask(addr, "GET", closed, &host, None);
            assert!(code == 403 && answer.contains("api.token_file"), "{closed}: {answer}");
        }
        assert_eq!(ask(addr, "POST", "/api/reload", &host, None).0, 403);
        assert_eq!(ask(addr, "HEAD", "/metrics", &host, None).0, 200);
        assert_eq!(ask(addr, "HEAD", "/api/members", &host, None).0, 403);
        let (_, text) = ask(addr, "GET", "/metrics", &host, None);
        assert!(text.contains("torwart_traffic_bytes_total") && !text.contains("member=\"7\""), "{text}");
        api.stop();
        let _ = std::fs::remove_dir_all(dir);

        let token = "0123456789abcdef0123456789abcdef";
        let (_runtime, api, addr, dir) = serve(Some(token));
        let host = format!("127.0.0.1:{}", addr.port());
        assert_eq!(status_of(addr, "/api/members", &host, Some(token)), 200);
        assert_eq!(status_of(addr, "/api/reloads", &host, Some(token)), 200);
        let (_, text) = ask(addr, "GET", "/metrics", &host, Some(token));
        assert!(text.contains("torwart_member_bytes_total{member=\"7\""), "{text}");
        api.stop();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The socket may be brought to a browser as a loopback port (`ssh
    /// -L`): it answers loopback names and the CLI's only, so that a page
    /// whose name now resolves to 127.0.0.1 cannot read it.
    #[test]
    fn the_socket_answers_loopback_names_and_the_cli_only() {
        use std::io::{Read, Write};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("torwart-api-host-{}", std::process::id()));
        let socket = dir.join("api.sock");
        let state = ApiState {
            live: Arc::new(Live::new(Arc::default())),
            db: None,
            reload_now: Arc::new(tokio::sync::Notify::new()),
            member_series: 10,
        };
        let config = ApiConfig { socket: socket.clone(), ..Default::default() };
        let api = Api::start(&runtime, &config, None, state).unwrap();
        let code = |host: Option<&str>| {
            let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
            write!(c, "GET /api/members HTTP/1.1\r\n{host}Connection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            answer.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0)
        };
        for host in [Some("torwart"), Some("localhost:9680"), Some("127.0.0.1:8080"), Some("[::1]:9680")] {
            assert_eq!(code(host), 200, "{host:?}");
        }
        for host in ["evil.example:9680", "evil.example", "torwart.evil.example"] {
            assert_eq!(code(Some(host)), 421, "{host}");
        }
        api.stop();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdef", b"abcdeg"));
        assert!(!same(b"abc", b"abcdef"));
    }
}

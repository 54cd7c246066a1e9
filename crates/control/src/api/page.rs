//! The web page (`crates/control/assets/`), embedded in the binary: these
//! boxes have no internet on their management side, so nothing comes from
//! elsewhere. Plain files, no build step; `app.js` polls the JSON API.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/style.css");

/// Every answer of the page says: no caching across versions, no framing
/// by other sites, no scripts or styles from anywhere but here.
const HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-cache"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
];

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    let [a, b, c] = HEADERS;
    ([(header::CONTENT_TYPE, kind), a, b, c], body)
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

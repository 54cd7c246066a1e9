//! Noticing that the member database changed, so the daemon reloads.
//!
//! [`Database::watch`] starts a background task and returns a
//! [`ChangeStream`]; [`ChangeStream::changed`] resolves once per burst of
//! changes. How the task notices depends on the database ([`WatchMode`]):
//!
//! * **PostgreSQL: LISTEN/NOTIFY.** `init` installs statement triggers on
//!   the member tables that call `pg_notify('torwart_members', table)`
//!   (`schema.rs`); the task `LISTEN`s on `torwart_members`. Notifications
//!   arrive when the changing transaction commits. If the listening
//!   connection breaks, the task reconnects and reports a change, because
//!   notifications sent in between are lost. If `LISTEN` cannot be used at
//!   all (a pooler in transaction mode), the task polls instead.
//! * **Polling the change counter.** The member tables' triggers bump
//!   `torwart_changes.counter` in the changing transaction; the task reads
//!   it every `poll_interval`. One indexed single-row read: cheap. Used by
//!   SQLite when every member table is a real table with torwart's
//!   triggers, and by PostgreSQL when `LISTEN` fails.
//! * **Polling SQLite's `data_version`.** When some member tables are the
//!   operator's views (whose underlying tables have no triggers of ours),
//!   the task keeps one connection and reads `PRAGMA data_version`, which
//!   changes whenever *another* connection commits to the file. This also
//!   fires for writes to unrelated tables (including torwart's own
//!   accounting flushes); a reload of an unchanged database is harmless,
//!   the policy diff is empty.
//!
//! A burst of changes (an import, a script of updates) gives one
//! notification: after the first change the task waits `debounce` and
//! swallows everything that arrives meanwhile. Errors (the database went
//! away) are reported once per outage; the task keeps trying.

use core::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at, Instant};

use super::backend::{cause, file_id, Pool, Stmt};
use super::{Database, DbError};

/// The PostgreSQL notification channel the triggers notify.
pub const CHANNEL: &str = "torwart_members";

/// Timing of a [`ChangeStream`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WatchOptions {
    /// How often a polling watch looks (250 ms by default).
    pub poll_interval: Duration,
    /// How long after the first change of a burst the notification waits
    /// for the rest of it (100 ms by default).
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions { poll_interval: Duration::from_millis(250), debounce: Duration::from_millis(100) }
    }
}

/// How a [`ChangeStream`] notices changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WatchMode {
    /// PostgreSQL `LISTEN torwart_members`.
    Notify,
    /// Polling `torwart_changes.counter`.
    PollCounter,
    /// Polling SQLite's `PRAGMA data_version`.
    PollDataVersion,
}

/// Notifications of changes to the member tables. Dropping it stops the watch.
#[derive(Debug)]
pub struct ChangeStream {
    rx: mpsc::Receiver<Result<(), DbError>>,
    mode: WatchMode,
    tasks: Vec<JoinHandle<()>>,
    url: String,
}

impl ChangeStream {
    pub fn mode(&self) -> WatchMode {
        self.mode
    }

    /// Waits for the next burst of changes: `Ok` means reload. `Err` is a
    /// problem watching (reported once per outage; the watch goes on and
    /// reports a change when it is back, as changes may have been missed).
    pub async fn changed(&mut self) -> Result<(), DbError> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(DbError::Watch { url: self.url.clone(), cause: "the watch stopped".into() }),
        }
    }

    /// True once the watch has stopped for good: [`ChangeStream::changed`]
    /// will only ever report that.
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed() && self.rx.is_empty()
    }

    /// [`ChangeStream::changed`] without waiting: `None` when nothing happened.
    pub fn try_changed(&mut self) -> Option<Result<(), DbError>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Events = mpsc::Sender<Result<(), DbError>>;

impl Database {
    /// Starts watching the member tables (see the module docs for how).
    /// Must be called within a tokio runtime; the watch runs as tasks on it.
    pub async fn watch(&self, options: WatchOptions) -> Result<ChangeStream, DbError> {
        let (raw_tx, raw_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel(1);
        let watcher = match &self.pool {
            Pool::Postgres { pool } => match listen(pool).await {
                Ok(listener) => {
                    let events = raw_tx.clone();
                    let task = tokio::spawn(notified(listener, pool.clone(), self.url.clone(), options, events));
                    Some((WatchMode::Notify, task))
                }
                Err(_) => None,
            },
            Pool::Sqlite { .. } => None,
        };
        let (mode, task) = match watcher {
            Some(w) => w,
            None if self.has_change_counter().await? => {
                let this = self.clone();
                (WatchMode::PollCounter, tokio::spawn(async move { this.poll_counter(options, raw_tx).await }))
            }
            None => match &self.pool {
                Pool::Sqlite { options: sqlite, .. } => {
                    let sqlite = (**sqlite).clone();
                    let url = self.url.clone();
                    (WatchMode::PollDataVersion, tokio::spawn(poll_data_version(sqlite, url, options, raw_tx)))
                }
                Pool::Postgres { .. } => {
                    return Err(DbError::Watch {
                        url: self.url.clone(),
                        cause: "LISTEN failed and there is no torwart_changes table to poll; run `torwart db init`"
                            .into(),
                    })
                }
            },
        };
        let debouncer = tokio::spawn(debounce(raw_rx, out_tx, options.debounce));
        Ok(ChangeStream { rx: out_rx, mode, tasks: vec![task, debouncer], url: self.url.clone() })
    }

    /// Whether the change counter is kept for every member table: the
    /// counter table exists and (SQLite) all triggers are there.
    async fn has_change_counter(&self) -> Result<bool, DbError> {
        let mut tx = self.begin_read().await?;
        let has = if self.base_table(&mut tx, "torwart_changes").await? != Some(true) {
            false
        } else if self.pool.is_postgres() {
            true
        } else {
            let sql =
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'torwart_changed_%'";
            let rows = tx.fetch(Stmt::new(sql, vec![])).await.map_err(|e| self.sql("cannot look up triggers", e))?;
            let n = rows.get(0).and_then(|r| r.int("n").ok().flatten()).unwrap_or(0);
            n == 3 * super::read::TABLES.len() as i64
        };
        tx.rollback().await.map_err(|e| self.sql("cannot finish reading", e))?;
        Ok(has)
    }

    async fn counter(&self) -> Result<i64, DbError> {
        let rows = self
            .pool
            .fetch(Stmt::new("SELECT counter FROM torwart_changes WHERE id = 1", vec![]))
            .await
            .map_err(|e| self.sql("cannot read torwart_changes", e))?;
        let value = rows.get(0).map(|r| r.int("counter"));
        match value {
            Some(Ok(Some(v))) => Ok(v),
            _ => Err(DbError::Watch { url: self.url.clone(), cause: "torwart_changes has no counter row".into() }),
        }
    }

    /// Polls the change counter, and for SQLite which file the path
    /// names: a file renamed over the database is a change too, whatever
    /// its counter says.
    async fn poll_counter(self, options: WatchOptions, events: Events) {
        let file = self.pool.sqlite_file().map(ToOwned::to_owned);
        poll(options, events, || async {
            let id = file.as_deref().and_then(file_id);
            self.counter().await.map(|v| (id, v))
        })
        .await;
    }
}

/// What a poller has seen: the last value, and whether it is failing.
struct Seen<T> {
    last: Option<T>,
    failing: bool,
}

impl<T: PartialEq> Seen<T> {
    fn new() -> Seen<T> {
        Seen { last: None, failing: false }
    }

    /// The event a probe's result gives, if any: a change when the value
    /// moved, or when it is back after an outage (changes may have been
    /// missed); an error at the start of an outage.
    fn event(&mut self, probe: Result<T, DbError>) -> Option<Result<(), DbError>> {
        match probe {
            Ok(v) => {
                let moved = self.last.as_ref().is_some_and(|l| *l != v) || self.failing;
                self.failing = false;
                self.last = Some(v);
                moved.then_some(Ok(()))
            }
            Err(e) => {
                let first = !self.failing;
                self.failing = true;
                first.then_some(Err(e))
            }
        }
    }
}

/// Polls `probe` every `poll_interval` and reports when its value moves.
async fn poll<T: PartialEq, F, Fut>(options: WatchOptions, events: Events, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: core::future::Future<Output = Result<T, DbError>>,
{
    let mut seen = Seen::new();
    loop {
        if let Some(event) = seen.event(probe().await) {
            if events.send(event).await.is_err() {
                return;
            }
        }
        sleep(options.poll_interval).await;
    }
}

/// `PRAGMA data_version` on the watch's own connection (made when missing).
async fn data_version(
    conn: &mut Option<sqlx::SqliteConnection>,
    options: &SqliteConnectOptions,
) -> Result<i64, sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(options.connect().await?),
    };
    sqlx::query_scalar("PRAGMA data_version").fetch_one(c).await
}

/// Polls `data_version`. It is per connection (it counts commits by
/// *other* connections), so the watch keeps one connection, and starts
/// over with a new one after an error, or when the path names another
/// file (one renamed over the database: a change).
async fn poll_data_version(options: SqliteConnectOptions, url: String, watch: WatchOptions, events: Events) {
    let mut conn = None;
    let mut seen = Seen::new();
    let mut file = None;
    loop {
        let id = file_id(options.get_filename());
        if id != file {
            conn = None;
            file = id;
        }
        let probe = data_version(&mut conn, &options).await.map(|v| (id, v)).map_err(|e| {
            conn = None;
            DbError::Watch { url: url.clone(), cause: cause(&e) }
        });
        if probe.is_err() {
            // A new connection has its own data_version: compare afresh.
            seen.last = None;
        }
        if let Some(event) = seen.event(probe) {
            if events.send(event).await.is_err() {
                return;
            }
        }
        sleep(watch.poll_interval).await;
    }
}

async fn listen(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications; after a broken connection, reconnects and
/// reports a change (notifications sent meanwhile are gone).
async fn notified(mut listener: PgListener, pool: sqlx::PgPool, url: String, options: WatchOptions, events: Events) {
    loop {
        // `Ok(None)`: the connection broke and was made again at once;
        // what was notified in between is lost, so that is a change too.
        match listener.try_recv().await.map(|_| ()) {
            Ok(()) => {
                if events.send(Ok(())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if events.send(Err(DbError::Watch { url: url.clone(), cause: cause(&e) })).await.is_err() {
                    return;
                }
                listener = loop {
                    sleep(options.poll_interval).await;
                    if let Ok(l) = listen(&pool).await {
                        break l;
                    }
                };
                if events.send(Ok(())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One notification per burst: after the first change, waits `window` and
/// swallows the changes that arrive meanwhile. Errors pass straight through.
async fn debounce(
    mut raw: mpsc::Receiver<Result<(), DbError>>,
    out: mpsc::Sender<Result<(), DbError>>,
    window: Duration,
) {
    while let Some(event) = raw.recv().await {
        if let Err(e) = event {
            if out.send(Err(e)).await.is_err() {
                return;
            }
            continue;
        }
        let deadline = Instant::now() + window;
        loop {
            match timeout_at(deadline, raw.recv()).await {
                Err(_) => break,
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => {
                    if out.send(Err(e)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = out.send(Ok(())).await;
                    return;
                }
            }
        }
        if out.send(Ok(())).await.is_err() {
            return;
        }
    }
}

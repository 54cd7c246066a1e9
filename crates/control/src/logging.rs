//! The log: one line per event on standard error,
//! `unix-seconds.millis LEVEL message key=value ...`, from every crate's
//! `tracing` events (the daemon's, the route mirror's). Control characters
//! in messages and values (a member's name with a newline or an escape
//! sequence, say) are escaped ([`escape_controls`]), so no input can forge
//! a line or drive a terminal. `TORWART_LOG` sets the level (error, warn,
//! info, debug, trace; default info).

use std::borrow::Cow;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the log as the process's `tracing` subscriber (once; later
/// calls change nothing).
pub fn init() {
    let level = std::env::var("TORWART_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).event_format(Line).try_init();
}

/// `text` with every control character (and the Unicode line separators and
/// bidirectional overrides) written as an escape such as `\n` or
/// `\u{1b}`: safe to put in a log line or on a terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    // A backslash too, so that an escape in the output is never one that
    // was in the input.
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\\' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The line format.
struct Line;

/// Targets whose events are logged without their fields: sqlx logs a
/// malformed line of a PostgreSQL password file whole (`line = ...`), and
/// such a line may well hold the password (`*:*:*:SECRET`).
const FIELDS_UNSAID: &[&str] = &["sqlx_postgres::options::pgpass"];

impl<S, N> FormatEvent<S, N> for Line
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str();
        write!(w, "{}.{:03} {level:5} {}", now.as_secs(), now.subsec_millis(), escape_controls(&fields.message))?;
        if FIELDS_UNSAID.iter().any(|t| event.metadata().target().starts_with(t)) {
            return writeln!(w);
        }
        writeln!(w, "{}", escape_controls(&fields.rest))
    }
}

/// An event's message and its other fields as ` key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field.name(), &format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field.name(), value);
        }
    }
}

impl Fields {
    /// ` name=value`, the value quoted (as a Rust string) when it holds
    /// anything that could pass for another field or end the line.
    fn field(&mut self, name: &str, value: &str) {
        let plain = !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || matches!(c, '=' | '"' | '\\'));
        if plain {
            let _ = write!(self.rest, " {name}={value}");
        } else {
            let _ = write!(self.rest, " {name}={value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's writer in a test: lines into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` logs, as the daemon's log would show it.
    fn logged(log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt().event_format(Line).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn an_event_is_one_line_whatever_its_message_and_fields_hold() {
        let text = logged(|| {
            let name = "eve\n1764000000.000 INFO  forged";
            tracing::warn!(error = "bad\u{1b}[2J", path = "a b=c", "reload refused: member {name:?} and {}", name);
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        let want = r#" WARN  reload refused: member "eve\\n1764000000.000 INFO  forged" and eve\n1764000000.000 INFO  forged error=bad\u{1b}[2J path="a b=c""#;
        assert!(text.trim_end().ends_with(want), "{text}");
    }

    /// sqlx's warning about a malformed password file line says which
    /// problem, not the line (which may hold the password).
    #[test]
    fn a_password_file_line_is_not_logged() {
        let text = logged(|| {
            tracing::warn!(target: "sqlx_postgres::options::pgpass", line = "*:*:*:SECRET", "Malformed line in pgpass file");
            tracing::warn!(target: "control::db", line = "kept", "another");
        });
        assert!(text.contains("Malformed line in pgpass file") && !text.contains("SECRET"), "{text}");
        assert!(text.contains("line=kept"), "{text}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let name = "eve\n1764000000.000 INFO  policy reloaded\u{1b}[2J\u{202e}";
        let out = escape_controls(name);
        assert!(!out.contains('\n') && !out.contains('\u{1b}') && !out.contains('\u{202e}'), "{out}");
        assert!(out.contains("eve\\n1764000000.000 INFO") && out.contains("\\u{1b}[2J"), "{out}");
        assert!(matches!(escape_controls("plain name äö"), Cow::Borrowed(_)));
    }
}

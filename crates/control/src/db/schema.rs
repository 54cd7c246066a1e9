//! Creating the schema, and the change tracking that [`Database::watch`] uses.
//!
//! `schema.sql` is the schema block of `docs/members.md`, character for
//! character (a test compares them), so the documentation is what `init`
//! creates. It is written as plain `CREATE TABLE` for readers; `init` runs
//! it with `IF NOT EXISTS`, so running it on a database that already has
//! the tables (or the operator's views in their place) changes nothing, and
//! it skips the index on a table that is a view.
//!
//! Change tracking, next to the schema:
//!
//! * a one-row table `torwart_changes (id, counter)`, whose counter goes
//!   up with every change to a member table, in the changing transaction
//!   (so a watcher sees it when the change commits, not before);
//! * SQLite: triggers `torwart_changed_<table>_{insert,update,delete}` on
//!   each member table that is a real table, bumping the counter;
//! * PostgreSQL: a trigger function `torwart_members_changed()` that bumps
//!   the counter and sends `pg_notify('torwart_members', TG_TABLE_NAME)`,
//!   and a statement trigger `torwart_changed` on each member table that
//!   is a real table, for INSERT, UPDATE, DELETE and TRUNCATE. An operator
//!   whose member tables are views over their own tables attaches the same
//!   function to those tables (`CREATE TRIGGER ... FOR EACH STATEMENT
//!   EXECUTE FUNCTION torwart_members_changed()`).
//!
//! `accounting` gets no trigger: torwart's own counter flushes must not
//! look like member changes.

use super::backend::{Stmt, Tx, Value};
use super::read::TABLES;
use super::{Database, DbError};

/// The schema of `docs/members.md`.
pub(crate) const SCHEMA: &str = include_str!("schema.sql");

/// The change counter, the same in both databases.
const CHANGES_TABLE: &str = "CREATE TABLE IF NOT EXISTS torwart_changes (
    id      INTEGER PRIMARY KEY,
    counter BIGINT  NOT NULL,
    CHECK (id = 1)
)";

/// Which flush of which box of a pair was written
/// ([`Database::write_accounting_once`]).
pub(crate) const USAGE_FLUSHES_TABLE: &str = "CREATE TABLE IF NOT EXISTS torwart_usage_flushes (
    writer     TEXT   NOT NULL,
    flush      BIGINT NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (writer, flush)
)";

const CHANGES_ROW: &str = "INSERT INTO torwart_changes (id, counter) VALUES (1, 0) ON CONFLICT (id) DO NOTHING";

/// The PostgreSQL trigger function. `SET search_path FROM CURRENT` pins
/// the schema `init` ran in, so the function finds `torwart_changes`
/// whatever the writing session's search path.
const PG_FUNCTION: &str = "CREATE OR REPLACE FUNCTION torwart_members_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE torwart_changes SET counter = counter + 1 WHERE id = 1;
    PERFORM pg_notify('torwart_members', TG_TABLE_NAME);
    RETURN NULL;
END
$$";

/// The statements of `schema.sql`, each made idempotent.
fn schema_statements() -> impl Iterator<Item = String> {
    SCHEMA.split(';').map(str::trim).filter(|s| !s.is_empty()).map(|s| {
        s.replacen("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1).replacen(
            "CREATE INDEX ",
            "CREATE INDEX IF NOT EXISTS ",
            1,
        )
    })
}

/// The table an index statement is on (`CREATE INDEX x ON t (...)`).
fn index_table(stmt: &str) -> Option<&str> {
    if !stmt.starts_with("CREATE INDEX") {
        return None;
    }
    let (_, after) = stmt.split_once(" ON ")?;
    after.split_whitespace().next()
}

impl Database {
    /// Creates the tables of `docs/members.md` (those that do not exist
    /// yet), the `accounting` table and the change tracking, in one
    /// transaction. Safe to run again, and on a database whose member
    /// tables are the operator's views.
    pub async fn init(&self) -> Result<(), DbError> {
        let err = |e| self.sql("cannot create the schema", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        for stmt in schema_statements() {
            if let Some(table) = index_table(&stmt) {
                if self.base_table(&mut tx, table).await? != Some(true) {
                    continue;
                }
            }
            tx.execute(Stmt::new(stmt, vec![])).await.map_err(err)?;
        }
        tx.execute(Stmt::new(CHANGES_TABLE, vec![])).await.map_err(err)?;
        tx.execute(Stmt::new(CHANGES_ROW, vec![])).await.map_err(err)?;
        tx.execute(Stmt::new(USAGE_FLUSHES_TABLE, vec![])).await.map_err(err)?;
        if self.pool.is_postgres() {
            tx.execute(Stmt::new(PG_FUNCTION, vec![])).await.map_err(err)?;
        }
        for (table, _) in TABLES {
            if self.base_table(&mut tx, table.name()).await? != Some(true) {
                continue;
            }
            let name = table.name();
            if self.pool.is_postgres() {
                let drop = format!("DROP TRIGGER IF EXISTS torwart_changed ON {name}");
                let create = format!(
                    "CREATE TRIGGER torwart_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {name} \
                     FOR EACH STATEMENT EXECUTE FUNCTION torwart_members_changed()"
                );
                tx.execute(Stmt::new(drop, vec![])).await.map_err(err)?;
                tx.execute(Stmt::new(create, vec![])).await.map_err(err)?;
            } else {
                for op in ["insert", "update", "delete"] {
                    let create = format!(
                        "CREATE TRIGGER IF NOT EXISTS torwart_changed_{name}_{op} AFTER {} ON {name} \
                         BEGIN UPDATE torwart_changes SET counter = counter + 1 WHERE id = 1; END",
                        op.to_ascii_uppercase()
                    );
                    tx.execute(Stmt::new(create, vec![])).await.map_err(err)?;
                }
            }
        }
        tx.commit().await.map_err(err)
    }

    /// Whether `name` is a real table (`Some(true)`), a view or the like
    /// (`Some(false)`), or does not exist (`None`).
    pub(crate) async fn base_table(&self, tx: &mut Tx, name: &str) -> Result<Option<bool>, DbError> {
        let sql = if self.pool.is_postgres() {
            "SELECT relkind::text AS kind FROM pg_class WHERE oid = to_regclass($1::text)"
        } else {
            "SELECT type AS kind FROM sqlite_master WHERE name = $1 AND type IN ('table', 'view')"
        };
        let rows = tx
            .fetch(Stmt::new(sql, vec![Value::from(name)]))
            .await
            .map_err(|e| self.sql(format!("cannot look up {name}"), e))?;
        let kind = match rows.get(0) {
            Some(row) => row.text("kind").map_err(|cause| DbError::Value(format!("looking up {name}: {cause}")))?,
            None => None,
        };
        Ok(kind.map(|k| matches!(k.as_str(), "table" | "r" | "p")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema.sql` is the schema block of `docs/members.md`.
    #[test]
    fn schema_is_the_documented_one() {
        let docs = include_str!("../../../../docs/members.md");
        let block = docs
            .split("```sql\n")
            .skip(1)
            .filter_map(|b| b.split_once("```").map(|(sql, _)| sql))
            .find(|sql| sql.contains("CREATE TABLE plans"))
            .expect("docs/members.md has the schema block");
        assert_eq!(block, SCHEMA, "crates/control/src/db/schema.sql must equal the schema block of docs/members.md");
    }

    #[test]
    fn statements_are_idempotent() {
        let stmts: Vec<String> = schema_statements().collect();
        assert_eq!(stmts.iter().filter(|s| s.starts_with("CREATE TABLE IF NOT EXISTS")).count(), 9);
        assert_eq!(stmts.iter().filter_map(|s| index_table(s)).collect::<Vec<_>>(), ["member_addresses"]);
        assert!(stmts.iter().all(|s| s.contains("IF NOT EXISTS")));
    }
}

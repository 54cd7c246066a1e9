//! What can go wrong with the member database, said to an operator.
//!
//! [`DbError`] is the one error type of the crate. Every variant says what
//! torwart was doing and why it failed in terms an operator can act on:
//! which database (its URL without the password), which table, which file
//! and line. A database whose contents are wrong is not a failure of the
//! database layer but a finding: [`DbError::Invalid`] carries every problem
//! as a [`PolicyError`], [`DbError::Import`] the same for an import, each
//! problem with the file and line it came from.

use core::fmt;
use std::path::PathBuf;

use policy::{PolicyError, Problem};

/// The member database layer's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {cause}")]
    Open { url: String, cause: String },
    /// A statement failed: `doing` says what torwart was doing ("cannot read table members").
    #[error("{doing} in {url}: {source}")]
    Sql {
        url: String,
        doing: String,
        #[source]
        source: sqlx::Error,
    },
    /// The database holds rows torwart refuses (values that do not parse,
    /// or a member database that does not compile); every problem is listed.
    #[error("{0}")]
    Invalid(PolicyError),
    /// An import file holds rows torwart refuses; nothing was written.
    #[error("{0}")]
    Import(ImportError),
    /// An import file could not be read or is not well-formed.
    #[error("cannot import {}: {cause}", path.display())]
    File { path: PathBuf, cause: String },
    /// The last good member database ([`super::read_last_good`]) could not be read.
    #[error("cannot use the last good member database {}: {cause}", path.display())]
    LastGood { path: PathBuf, cause: String },
    /// A value torwart was asked to write does not fit the schema.
    #[error("{0}")]
    Value(String),
    /// The change watch could not be started, or stopped.
    #[error("cannot watch {url} for changes: {cause}")]
    Watch { url: String, cause: String },
    /// The database did not answer in time (gone without a word: a
    /// partition, a host down).
    #[error("{doing} in {url}: no answer within {seconds} s")]
    NoAnswer { url: String, doing: String, seconds: u64 },
}

/// Where an imported row came from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Location {
    /// The file as the operator named it.
    pub file: PathBuf,
    /// 1-based line of the row (for JSON, the line its object starts on).
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why an import was refused: every problem, each with the places in the
/// files that hold the rows it names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImportError {
    pub problems: Vec<(Problem, Vec<Location>)>,
}

impl ImportError {
    /// The problems without their locations, as the compiler reports them.
    pub fn to_policy_error(&self) -> PolicyError {
        PolicyError::new(self.problems.iter().map(|(p, _)| p.clone()).collect())
    }
}

impl fmt::Display for ImportError {
    /// `file:line: table row N: ...`, one line per problem, after a count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "nothing imported: the result has {n} problem{}", if n == 1 { "" } else { "s" })?;
        for (problem, locations) in &self.problems {
            f.write_str("\n")?;
            for (i, l) in locations.iter().enumerate() {
                write!(f, "{}{l}", if i > 0 { ", " } else { "" })?;
            }
            if !locations.is_empty() {
                f.write_str(": ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

//! How values sit in table rows, the same in every backend: times as RFC 3339 text to the microsecond, JSON as
//! text, counts as BIGINT. Reading columns by name works on any sqlx backend's rows, so that a row type is
//! mapped once for all backends.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::StoreError;

/// A time as stored. Microseconds, because that is what the audit hash covers.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A model value (flag, segment) as JSON.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("flag model serializes")
}

/// A stored JSON body; `what` names the row when it does not parse.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { message: format!("{}: {e}", what()) })
}

/// A count as a BIGINT column holds it: counts beyond its range stay at its maximum.
pub(crate) fn count_to_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count read back; a negative one (edited by hand) counts as none.
pub(crate) fn count_from_column(n: i64) -> u64 {
    n.max(0) as u64
}

/// The column types the schema uses, read by name from a row of any backend.
pub(crate) trait Columns<'r> {
    /// A BIGINT or INTEGER column.
    fn int(&'r self, column: &'static str) -> Result<i64, sqlx::Error>;
    /// A TEXT NOT NULL column.
    fn text(&'r self, column: &'static str) -> Result<String, sqlx::Error>;
    /// A TEXT column that may be NULL.
    fn text_or_null(&'r self, column: &'static str) -> Result<Option<String>, sqlx::Error>;
    /// A BIGINT or INTEGER column that may be NULL.
    fn int_or_null(&'r self, column: &'static str) -> Result<Option<i64>, sqlx::Error>;
}

impl<'r, R: Row> Columns<'r> for R
where
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&'r self, column: &'static str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
    fn text(&'r self, column: &'static str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
    fn text_or_null(&'r self, column: &'static str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn int_or_null(&'r self, column: &'static str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
}

/// At most `max` bytes of `text`, cut at a character boundary: an error message from a remote service must
/// not grow a row without bound.
pub(crate) fn bounded_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

//! List queries built from the filters a caller gave, and only those: each combination of
//! filters is a statement of its own, with a plan of its own. Written the other way, as one
//! statement with `($1 is null or column = $1)` for every filter, Postgres plans it once
//! for all callers (a prepared statement switches to a generic plan after five runs), and
//! that plan cannot use the index of the one filter given: on a log of ten million events it
//! reads the table in order until a page is full.
//!
//! A list starts from `select ... where <always true, or its own first condition>` and each
//! filter adds ` and <condition>` to it.

use sqlx::{Postgres, QueryBuilder};

/// Adds ` and <sql>$n` with `value` bound, when there is a value (`sql` ends with the
/// operator: `"r.status = "`).
pub fn and_if<'a, T>(query: &mut QueryBuilder<'a, Postgres>, sql: &str, value: Option<T>)
where
    T: 'a + Send + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres>,
{
    if let Some(value) = value {
        query.push(" and ").push(sql).push_bind(value);
    }
}

/// Adds the order and the limit that end a page.
pub fn order_and_limit<'a>(query: &mut QueryBuilder<'a, Postgres>, order: &str, limit: i64) {
    query.push(" order by ").push(order).push(" limit ").push_bind(limit);
}

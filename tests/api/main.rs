//! Black-box tests of the API over real HTTP against a real Postgres, a fresh database each.

mod auth;
mod cli;
mod helpers;
mod idempotency;
mod operations;
mod pagination;
mod share_requests;
mod spec;

//! Black-box tests of the API over real HTTP against a real Postgres, a fresh database each.

mod audit;
mod audit_attacks;
mod auth;
mod authz_attacks;
mod cli;
mod crash;
mod edges;
mod fake_glance;
mod faults;
mod fuzz;
mod helpers;
mod idempotency;
mod keystone;
mod matrix;
mod openstack;
mod operations;
mod outages;
mod outbound;
mod pagination;
mod policy;
mod proxy;
mod races;
mod share_requests;
mod spec;
mod webhooks;
mod worker;

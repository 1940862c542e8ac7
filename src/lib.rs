//! glance-share-broker: brokers OpenStack Glance image shares between projects.
//!
//! `domain` holds the vocabulary and rules; `db` the Postgres state; `events` records what
//! happened (audit event and webhook deliveries); `http` the API; `metrics` names and
//! describes what `/metrics` exports;
//! `startup` wires them together from `config`.

pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod openstack;
pub mod startup;
pub mod tasks;
pub mod telemetry;
pub mod worker;

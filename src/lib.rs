//! glance-share-broker: brokers OpenStack Glance image shares between projects.
//!
//! `domain` holds the vocabulary and rules; `db` the Postgres state; `events` records what
//! happened (audit event and webhook deliveries); `validation` the one check of a request
//! against Keystone and Glance (the worker's, and the API's dry run); `http` the API;
//! `metrics` names and describes what `/metrics` exports;
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
pub mod validation;
pub mod worker;

//! A small OpenStack client over reqwest: Keystone v3 authentication and project lookups,
//! Glance v2 images and members; Nova servers and Cinder volumes, read to find what depends
//! on an image. Every call's outcome is classified once, here, into what
//! the worker needs to know: done, retry later, or give up with a plain message.
//! Imports nothing from the rest of the crate but `domain`, `db::rate_slots`, where the shared
//! outbound rate limit ([`pace`]) keeps its slots, `metrics`, and `telemetry::trace` (each
//! call's client span and `traceparent`).

mod call_span;
pub mod cinder;
mod client;
mod clouds;
mod error;
pub mod glance;
mod impact;
pub mod keystone;
pub mod nova;
pub mod pace;
mod sign_in;

pub use client::{OpenStack, PaceRefused, Pacer, Pass};
pub use clouds::{CloudConfig, Credentials};
pub use error::CallError;
pub use sign_in::SignedIn;

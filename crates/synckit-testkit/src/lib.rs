//! Test support for synckit: conformance suites every store and transport runs, the hub's HTTP
//! contract checked over raw HTTP, and a deterministic multi-node simulation harness.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test.

pub mod fault_proxy;
pub mod fuzz;
pub mod hostile;
pub mod hub_suite;
pub mod services;
pub mod sim;
pub mod store_suite;
pub mod tls;
pub mod transport_suite;

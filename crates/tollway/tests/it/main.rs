//! Integration tests: the gateway and tollway-mock on ephemeral loopback ports, driven over HTTP.

mod accounts;
mod azure;
mod bad_input;
mod bedrock;
mod budgets;
mod cache;
mod count_tokens;
mod google;
mod harness;
mod lifecycle;
mod reload;
mod responses;
mod routing;
mod shared;
mod telemetry;
mod tls;
mod translate;
mod ui;

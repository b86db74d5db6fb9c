//! Tollway, an LLM gateway: the HTTP edge (`api`, `server`), configuration (`config`), the runtime
//! built from it (`runtime`), the request path (`gateway`) and the command line (`cli`).

pub mod accounts;
pub mod admin;
pub mod api;
pub mod budgets;
pub mod cache;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod malloc;
pub mod metrics;
pub mod prices;
pub mod router_cli;
pub mod routing;
pub mod rules;
pub mod runtime;
pub mod server;
pub mod shared;
pub mod telemetry;
pub mod tokens;
pub mod ui;

pub use runtime::Runtime;
pub use server::{app, serve, AppState};

//! Prices come from `tollway-engine` (the built-in table with sources and dates, LiteLLM import,
//! exact costs); this module only re-exports them for the rest of the binary.

pub use tollway_engine::prices::{Cost, ModelPrice, PriceEntry, PriceTable};

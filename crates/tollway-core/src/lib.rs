//! Tollway's vocabulary: the canonical chat request, response and stream events that every inbound
//! API is converted into and every provider is converted from, normalised usage, classified provider
//! errors, and the `Provider` trait. No IO and no serde derive live here.

pub mod days;
pub mod error;
pub mod money;
pub mod provider;
pub mod types;

pub use error::{ErrorKind, ProviderError, Retry};
pub use money::{Micros, MoneyError, Picos, PicosPerToken};
pub use provider::{BoxFuture, Capabilities, EventStream, Provider, ProviderInfo, Waited};
pub use types::*;

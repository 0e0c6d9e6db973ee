//! reach: audience resolution and routing for push backends.
//!
//! The flow of a request: a validated audience (`expr::AudienceSpec`, built at the Python edge)
//! is compiled against the registry (`expr`), evaluated over roaring bitmaps (`eval`), and split
//! into delivery batches (`route`). `registry` holds the devices, `snapshot` saves and loads it,
//! `load` is the bulk import path (`jsonl` reads its JSON Lines format). Only `py` knows about
//! Python.

pub mod chunked;
pub mod containers;
pub mod error;
pub mod eval;
pub mod export;
pub mod expr;
mod huge;
pub mod index;
pub mod intern;
mod jsonl;
pub mod load;
pub mod probe;
pub mod registry;
pub mod rid;
pub mod route;
pub mod snapshot;
pub mod ums;

pub use error::{Error, Result};
pub use expr::AudienceSpec;
pub use registry::{Platform, Registry, Vendor};

#[cfg(feature = "python")]
mod py;

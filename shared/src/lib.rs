//! Model Bucket's shared vocabulary: the model catalog (GGUF headers, stable IDs, hashing,
//! config) and, later, the router–worker protocol.

pub mod catalog;
pub mod config;
pub mod cpus;
pub mod gguf;
pub mod hash;
pub mod index;
pub mod mem;
pub mod model_info;
pub mod naming;
pub mod protocol;
pub mod state_file;

pub use catalog::{Catalog, Skipped};
pub use config::{Config, ModelConfig};
pub use model_info::{Capability, ModelInfo};

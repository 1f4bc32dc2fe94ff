//! Model Bucket's router and command-line tools as a library: the `model-bucket` binary is a
//! thin `main` over it, and the fuzz targets reach the request validation through it.

pub mod add;
pub mod bucket;
pub mod catalog_cmd;
pub mod cli;
pub mod ctl_cmd;
pub mod disk;
pub mod fleet;
pub mod fuzzing;
pub mod generate_cmd;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod pull;
pub mod pull_cmd;
pub mod registry;
pub mod routing;
pub mod serve;
pub mod supervisor;
pub mod watch;
pub mod worker;

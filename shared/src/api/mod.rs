//! The functions' API: their names, the parameters each accepts, reading an event into them,
//! and kv-bucket-create's configuration read from its parameters.

pub mod bucket_config;
pub mod function;
pub mod params;

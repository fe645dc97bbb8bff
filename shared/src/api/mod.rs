//! The functions' API: their names, each one's typed request and response, and reading an
//! event into a request (kv-bucket-create's configuration included).

pub mod bucket_config;
pub mod events;
pub mod function;
pub mod params;
pub mod requests;
pub mod responses;

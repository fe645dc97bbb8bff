//! Everything that knows DynamoDB: the client, the table schema, the item layout, the requests
//! and how their failures are classified.

pub mod client;
pub mod errors;
pub mod items;
pub mod requests;
pub mod schema;

pub use requests::Store;

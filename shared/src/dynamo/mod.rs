//! Everything that knows DynamoDB: the client, the table schema, the item layout and requests.

pub mod client;
pub mod errors;
pub mod items;
pub mod schema;
pub mod store;

pub use store::Store;

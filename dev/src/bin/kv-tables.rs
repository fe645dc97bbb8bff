//! `make tables`: creates both KV tables (idempotently) at the endpoint the environment names.

use kv::model::config::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let client = kv::store::client::from_env().await;
    match kv::store::schema::ensure_tables(&client, &settings).await {
        Ok(()) => {
            println!(
                "tables ready: {} (buckets), {} (items)",
                settings.buckets_table, settings.items_table
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("could not create the tables: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

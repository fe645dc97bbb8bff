//! `make set-aside`: lists the stream records the consumers set aside (SPEC "Nothing stalls the
//! stream"), oldest first, as JSON lines, from the items table the environment names.

use kv::model::config::Settings;
use kv::store::Store;
use serde_json::json;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let store = Store::new(kv::store::client::from_env().await, &settings);
    match store.set_aside_records().await {
        Ok(records) => {
            for record in &records {
                let line = json!({
                    "at": record.at_ms,
                    "function": record.function,
                    "bucket": record.bucket,
                    "key": record.key,
                    "revision": record.revision,
                    "target": record.target,
                    "reason": record.reason,
                    "record": record.record_id,
                });
                println!("{line}");
            }
            eprintln!(
                "{} record(s) set aside in {}",
                records.len(),
                settings.items_table
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("could not list the set-aside records: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

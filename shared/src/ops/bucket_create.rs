//! kv-bucket-create: a retry with the same configuration succeeds, a different one is refused.

use crate::api::params::Params;
use crate::model::error::KvError;
use crate::ops::state::Kv;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let config = crate::api::bucket_config::bucket_config(&params)?;
    let created = kv
        .store
        .create_bucket(
            &config,
            crate::model::time::ns_to_ms(crate::model::time::now_ns()),
        )
        .await?;
    if !created {
        match kv.store.read_bucket(&config.bucket).await? {
            Some(existing) if existing.deleting_ms.is_some() => {
                return Err(KvError::BucketExists(format!(
                    "'{}' is being deleted; create it again once its items are removed",
                    config.bucket
                )))
            }
            Some(existing) if existing.config == config => {}
            Some(_) => {
                return Err(KvError::BucketExists(format!(
                    "'{}' exists with a different configuration (bucket configurations cannot be changed)",
                    config.bucket
                )))
            }
            None => {
                return Err(KvError::BucketExists(format!(
                    "'{}' is still being removed; create it again shortly",
                    config.bucket
                )))
            }
        }
    }
    Ok(json!({"message": "Bucket created successfully", "config": config.to_json()}))
}

//! kv-bucket-create: a retry with the same configuration succeeds, a different one is refused.

use crate::api::responses::BucketCreated;
use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::time;
use crate::ops::state::Kv;

pub async fn run(kv: &Kv, config: BucketConfig) -> Result<BucketCreated, KvError> {
    crate::model::placement::check_placement(&config, &kv.deployment)?;
    let created = kv
        .store
        .create_bucket(&config, time::ns_to_ms(time::now_ns()))
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
    Ok(BucketCreated {
        message: "Bucket created successfully",
        config,
    })
}

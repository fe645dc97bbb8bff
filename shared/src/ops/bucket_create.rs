//! kv-bucket-create: a retry with the same configuration succeeds, a different one is refused.

use crate::api::responses::BucketCreated;
use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::time;
use crate::ops::state::Kv;

pub async fn run(kv: &Kv, config: BucketConfig) -> Result<BucketCreated, KvError> {
    crate::model::placement::check_placement(&config, &kv.deployment)?;
    check_origins(kv, &config).await?;
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

/// The buckets this one mirrors or sources must exist, and copying from them must not lead
/// back to this bucket: around a cycle of sources every copy is a new revision, which would
/// travel for ever. (A mirror keeps its origin's revisions, so a copy that came round would
/// be refused; a cycle is refused all the same, as NATS refuses it.)
async fn check_origins(kv: &Kv, config: &BucketConfig) -> Result<(), KvError> {
    if config.mirror.is_some() && config.max_bytes > 0 {
        return Err(KvError::param(
            "Parameter 'max_bytes' cannot be used with 'mirror': a mirror holds what its origin holds",
        ));
    }
    let mut paths: Vec<Vec<String>> = config
        .origins()
        .into_iter()
        .map(|origin| vec![config.bucket.clone(), origin.to_string()])
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = paths.pop() {
        let Some(bucket) = path.last() else {
            continue;
        };
        if bucket == &config.bucket {
            return Err(KvError::param(format!(
                "Parameter '{}' would make a cycle of copies: {}",
                if config.mirror.is_some() {
                    "mirror"
                } else {
                    "sources"
                },
                path.join(" <- ")
            )));
        }
        if !seen.insert(bucket.clone()) {
            continue;
        }
        let record = kv
            .store
            .read_bucket(bucket)
            .await?
            .filter(|record| record.deleting_ms.is_none());
        let Some(record) = record else {
            if path.len() == 2 {
                return Err(KvError::BucketNotFound(format!(
                    "'{bucket}', which '{}' would copy from",
                    config.bucket
                )));
            }
            continue;
        };
        for origin in record.config.origins() {
            let mut longer = path.clone();
            longer.push(origin.to_string());
            paths.push(longer);
        }
    }
    Ok(())
}

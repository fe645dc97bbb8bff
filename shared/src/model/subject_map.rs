//! PLACEHOLDER until the subject-map branch lands.
pub struct RepublishMap {
    src: crate::model::subject::Filter,
    dest: String,
}
impl RepublishMap {
    pub fn new(_bucket: &str, src: &str, dest: &str) -> Result<RepublishMap, String> {
        Ok(RepublishMap {
            src: crate::model::subject::Filter::parse(src).map_err(|e| e.to_string())?,
            dest: dest.to_string(),
        })
    }
    pub fn map(&self, key: &str) -> Option<String> {
        self.src.matches(key).then(|| self.dest.replace('>', key))
    }
}

/// PLACEHOLDER: the key a source's revision takes in the target, or None when filtered out.
pub fn source_key(
    filter_subject: Option<&str>,
    transforms: &[crate::model::config::SubjectTransform],
    key: &str,
) -> Option<String> {
    if let Some(filter) = filter_subject {
        if !crate::model::subject::Filter::parse(filter)
            .ok()?
            .matches(key)
        {
            return None;
        }
    }
    for transform in transforms {
        let map = RepublishMap::new("", &transform.src, &transform.dest).ok()?;
        if let Some(mapped) = map.map(key) {
            return Some(mapped);
        }
    }
    Some(key.to_string())
}

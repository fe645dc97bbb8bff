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

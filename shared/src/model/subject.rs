//! NATS subject patterns over a key's dot-separated tokens: `*` is one token, `>` the rest.

use crate::model::error::KvError;

#[derive(Debug, Clone)]
pub struct Filter {
    tokens: Vec<String>,
}

impl Filter {
    pub fn parse(pattern: &str) -> Result<Filter, KvError> {
        Filter::check(pattern).map_err(|why| KvError::param(format!("Parameter 'filter' {why}")))
    }

    /// The pattern, or why it is not one ("is not a valid subject pattern ('a*'): ...").
    pub fn check(pattern: &str) -> Result<Filter, String> {
        let invalid = |why: &str| {
            Err(format!(
                "is not a valid subject pattern ('{}'): {why}",
                crate::model::validate::truncate(pattern)
            ))
        };
        if pattern.is_empty() {
            return invalid("it is empty");
        }
        let tokens: Vec<String> = pattern.split('.').map(str::to_string).collect();
        for (index, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                return invalid("it has an empty token");
            }
            if token == ">" && index + 1 != tokens.len() {
                return invalid("'>' may only be the last token");
            }
            if token.len() > 1 && (token.contains('*') || token.contains('>')) {
                return invalid("'*' and '>' must be whole tokens");
            }
        }
        Ok(Filter { tokens })
    }

    pub fn matches(&self, key: &str) -> bool {
        let mut parts = key.split('.');
        for token in &self.tokens {
            match (token.as_str(), parts.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (literal, Some(part)) if literal == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_wildcards() {
        let filter = |pattern| Filter::parse(pattern).unwrap();
        assert!(filter("a.b").matches("a.b"));
        assert!(!filter("a.b").matches("a.b.c"));
        assert!(filter("a.*").matches("a.b"));
        assert!(!filter("a.*").matches("a.b.c"));
        assert!(!filter("a.*").matches("a"));
        assert!(filter("a.>").matches("a.b.c"));
        assert!(!filter("a.>").matches("a"));
        assert!(filter(">").matches("anything.at.all"));
        assert!(filter("*.b.>").matches("x.b.c"));
        assert!(filter("user_123").matches("user_123"));
        for bad in ["", "a..b", "a.>.b", "a*", ".a", "a."] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}

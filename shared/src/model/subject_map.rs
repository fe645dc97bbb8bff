//! NATS subject mapping, as nats-server applies it to a KV bucket's `republish` and to a
//! stream source's `subject_transforms`: a source pattern (`*` one token, `>` the rest) and a
//! destination whose tokens are literals, references to the source's `*` wildcards (`$1` or
//! `{{wildcard(1)}}`, 1-based), or `>` for what the source's `>` matched.
//!
//! Republish maps the stored message's whole subject, `$KV.BUCKET.KEY`: NATS's clients put
//! `$KV.BUCKET.` in front of a `src` that does not start with `$KV.` (an empty `src` is `>`).
//! A source's transforms map the key; a pattern written as a whole subject
//! (`$KV.ORIGIN.a.*`) has its `$KV.ORIGIN.` taken off first.

use crate::model::config::SubjectTransform;
use crate::model::subject::Filter;

/// NATS KV's subject prefix.
const KV_PREFIX: &str = "$KV.";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// The n-th (1-based) `*` of the source.
    Wildcard(usize),
    /// What the source's `>` matched.
    Rest,
}

/// One source pattern and the destination it maps to.
#[derive(Debug, Clone)]
pub struct Mapping {
    src: Vec<String>,
    dest: Vec<Token>,
}

impl Mapping {
    /// Checks the pair as nats-server does; the error is a sentence naming what is wrong.
    pub fn new(src: &str, dest: &str) -> Result<Mapping, String> {
        Filter::check(src).map_err(|why| format!("'src' {why}"))?;
        let src: Vec<String> = src.split('.').map(str::to_string).collect();
        let wildcards = src.iter().filter(|token| *token == "*").count();
        let full = src.last().is_some_and(|token| token == ">");
        if dest.is_empty() || dest.split('.').any(str::is_empty) {
            return Err(format!("'dest' '{dest}' is not a subject (empty token)"));
        }
        let mut tokens = Vec::new();
        let parts: Vec<&str> = dest.split('.').collect();
        for (index, part) in parts.iter().enumerate() {
            let token = if *part == ">" {
                if index + 1 != parts.len() {
                    return Err(format!("'dest' '{dest}': '>' may only be the last token"));
                }
                if !full {
                    return Err(format!(
                        "'dest' '{dest}' ends with '>' but 'src' has no '>' to carry over"
                    ));
                }
                Token::Rest
            } else if let Some(number) = part.strip_prefix('$') {
                Token::Wildcard(wildcard_index(number, dest)?)
            } else if let Some(inner) = part
                .strip_prefix("{{")
                .and_then(|rest| rest.strip_suffix("}}"))
            {
                let inner = inner.trim();
                let argument = inner
                    .strip_prefix("wildcard(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!("'dest' '{dest}': only {{{{wildcard(N)}}}} functions are supported, not '{inner}'")
                    })?;
                Token::Wildcard(wildcard_index(argument.trim(), dest)?)
            } else if part.contains('*') || part.contains('>') || part.contains("{{") {
                return Err(format!(
                    "'dest' '{dest}': '{part}' is not a token of a subject"
                ));
            } else {
                Token::Literal((*part).to_string())
            };
            if let Token::Wildcard(number) = token {
                if number > wildcards {
                    return Err(format!(
                        "'dest' '{dest}' refers to wildcard {number}, but 'src' has {wildcards}"
                    ));
                }
            }
            tokens.push(token);
        }
        if full && !tokens.contains(&Token::Rest) {
            return Err(format!(
                "'dest' '{dest}' must end with '>' to carry what 'src''s '>' matches"
            ));
        }
        if (wildcards > 0 || full)
            && tokens
                .iter()
                .all(|token| matches!(token, Token::Literal(_)))
        {
            return Err(format!(
                "'dest' '{dest}' refers to none of 'src''s wildcards: every subject would map to one"
            ));
        }
        Ok(Mapping { src, dest: tokens })
    }

    /// The subject mapped into the destination, or None when it does not match the source.
    pub fn map(&self, subject: &str) -> Option<String> {
        let parts: Vec<&str> = subject.split('.').collect();
        let mut wildcards = Vec::new();
        let mut rest: Option<String> = None;
        for (index, token) in self.src.iter().enumerate() {
            match token.as_str() {
                ">" => {
                    if index >= parts.len() {
                        return None;
                    }
                    rest = Some(parts[index..].join("."));
                    break;
                }
                "*" => wildcards.push(*parts.get(index)?),
                literal => {
                    if parts.get(index) != Some(&literal) {
                        return None;
                    }
                }
            }
        }
        if rest.is_none() && parts.len() != self.src.len() {
            return None;
        }
        let mapped: Option<Vec<String>> = self
            .dest
            .iter()
            .map(|token| match token {
                Token::Literal(text) => Some(text.clone()),
                Token::Wildcard(number) => wildcards
                    .get(number.checked_sub(1)?)
                    .map(|part| (*part).to_string()),
                Token::Rest => rest.clone(),
            })
            .collect();
        Some(mapped?.join("."))
    }
}

fn wildcard_index(text: &str, dest: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(number) if number >= 1 => Ok(number),
        _ => Err(format!(
            "'dest' '{dest}': wildcard references count from 1, not '{text}'"
        )),
    }
}

/// A bucket's `republish`, mapping its keys' subjects `$KV.BUCKET.KEY`.
#[derive(Debug, Clone)]
pub struct RepublishMap {
    mapping: Mapping,
    prefix: String,
}

impl RepublishMap {
    pub fn new(bucket: &str, src: &str, dest: &str) -> Result<RepublishMap, String> {
        let prefix = format!("{KV_PREFIX}{bucket}.");
        let src = match src {
            "" => format!("{prefix}>"),
            full if full.starts_with(KV_PREFIX) => full.to_string(),
            relative => format!("{prefix}{relative}"),
        };
        Ok(RepublishMap {
            mapping: Mapping::new(&src, dest)?,
            prefix,
        })
    }

    /// The subject a revision of `key` is republished to, or None when the key does not match.
    pub fn map(&self, key: &str) -> Option<String> {
        self.mapping.map(&format!("{}{key}", self.prefix))
    }
}

/// A pattern over keys, written over keys or over the origin's whole subjects.
fn over_keys<'a>(origin: &str, pattern: &'a str) -> &'a str {
    pattern
        .strip_prefix(KV_PREFIX)
        .and_then(|rest| rest.strip_prefix(origin))
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(pattern)
}

/// How a mirror or source takes an origin's keys: its filter, then its transforms.
#[derive(Debug, Clone)]
pub struct SourceMap {
    filter: Option<Filter>,
    transforms: Vec<Mapping>,
}

impl SourceMap {
    pub fn new(
        origin: &str,
        filter_subject: Option<&str>,
        transforms: &[SubjectTransform],
    ) -> Result<SourceMap, String> {
        let filter = filter_subject
            .map(|pattern| {
                Filter::check(over_keys(origin, pattern))
                    .map_err(|why| format!("'filter_subject' {why}"))
            })
            .transpose()?;
        let transforms = transforms
            .iter()
            .map(|transform| {
                let src = match transform.src.as_str() {
                    "" => ">",
                    src => over_keys(origin, src),
                };
                Mapping::new(src, over_keys(origin, &transform.dest))
            })
            .collect::<Result<_, _>>()?;
        Ok(SourceMap { filter, transforms })
    }

    /// The key a revision of `key` takes in the target, or None when it is not taken. With
    /// transforms, a key no transform's source matches is not taken, as in NATS.
    pub fn map(&self, key: &str) -> Option<String> {
        if self
            .filter
            .as_ref()
            .is_some_and(|filter| !filter.matches(key))
        {
            return None;
        }
        if self.transforms.is_empty() {
            return Some(key.to_string());
        }
        self.transforms
            .iter()
            .find_map(|transform| transform.map(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn republish(src: &str, dest: &str, key: &str) -> Option<String> {
        RepublishMap::new("B", src, dest).unwrap().map(key)
    }

    #[test]
    fn republish_maps_the_whole_subject_as_nats_does() {
        // Seen on nats-server 2.9.10 (dev/tests/it/nats_replication.rs): `>` carries the key.
        assert_eq!(
            republish(">", "repub.x.>", "user.1"),
            Some("repub.x.user.1".into())
        );
        assert_eq!(republish("", "repub.>", "a"), Some("repub.a".into()));
        assert_eq!(
            republish("user.>", "repub.>", "user.1"),
            Some("repub.1".into())
        );
        assert_eq!(republish("user.>", "repub.>", "order.1"), None);
        assert_eq!(
            republish("orders.*", "shop.$1.paid", "orders.7"),
            Some("shop.7.paid".into())
        );
        assert_eq!(
            republish("*.*", "{{wildcard(2)}}.{{wildcard(1)}}", "a.b"),
            Some("b.a".into())
        );
        assert_eq!(
            republish("$KV.B.a.*", "x.{{ wildcard(1) }}", "a.z"),
            Some("x.z".into())
        );
        assert_eq!(republish("user.1", "one", "user.1"), Some("one".into()));
    }

    #[test]
    fn destinations_nats_refuses_are_refused() {
        for (src, dest) in [
            ("a.*", "b.$2"),
            ("a.*", "b.>"),
            ("a.>", "b.c"),
            ("a.*", "literal"),
            ("a.*", "b.>.c"),
            ("a.*", "b..c"),
            ("a.*", "b.$0"),
            ("a.*", "{{partition(3,1)}}"),
            ("a*", "b"),
        ] {
            assert!(
                RepublishMap::new("B", src, dest).is_err(),
                "{src} -> {dest}"
            );
        }
    }

    #[test]
    fn a_source_filters_then_transforms_its_keys() {
        let transform = |src: &str, dest: &str| SubjectTransform {
            src: src.into(),
            dest: dest.into(),
        };
        let plain = SourceMap::new("O", Some("orders.*"), &[]).unwrap();
        assert_eq!(plain.map("orders.1"), Some("orders.1".into()));
        assert_eq!(plain.map("users.1"), None);
        let moved = SourceMap::new(
            "O",
            None,
            &[
                transform("orders.*", "shop.orders.{{wildcard(1)}}"),
                transform("$KV.O.users.>", "$KV.O.people.>"),
            ],
        )
        .unwrap();
        assert_eq!(moved.map("orders.2"), Some("shop.orders.2".into()));
        assert_eq!(moved.map("users.a.b"), Some("people.a.b".into()));
        assert_eq!(moved.map("other"), None);
        assert!(SourceMap::new("O", Some("a..b"), &[]).is_err());
    }
}

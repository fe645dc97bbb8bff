//! How a value's text becomes the bytes stored in DynamoDB, with optional LZ4 compression.

use crate::model::error::KvError;

/// The stored bytes and whether they are compressed. Compression is kept only when it saves
/// space, so small or incompressible values cost nothing extra to read.
pub fn encode(text: &str, compress: bool) -> (Vec<u8>, bool) {
    if compress {
        let packed = lz4_flex::compress_prepend_size(text.as_bytes());
        if packed.len() < text.len() {
            return (packed, true);
        }
    }
    (text.as_bytes().to_vec(), false)
}

pub fn decode(bytes: &[u8], compressed: bool) -> Result<String, KvError> {
    let raw = if compressed {
        lz4_flex::decompress_size_prepended(bytes)
            .map_err(|error| KvError::Internal(format!("Stored value is corrupt (LZ4): {error}")))?
    } else {
        bytes.to_vec()
    };
    String::from_utf8(raw)
        .map_err(|_| KvError::Internal("Stored value is not UTF-8 text".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let long = "abc".repeat(1000);
        for (text, compress) in [
            ("", true),
            ("x", true),
            (long.as_str(), true),
            (long.as_str(), false),
        ] {
            let (bytes, compressed) = encode(text, compress);
            assert_eq!(decode(&bytes, compressed).unwrap(), text);
        }
        let (bytes, compressed) = encode(&long, true);
        assert!(compressed && bytes.len() < long.len() / 10);
        assert!(!encode("x", true).1);
    }
}

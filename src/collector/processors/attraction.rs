//! The attribute action engine shared by `attributes` (span attributes) and `resource`
//! (resource attributes), with the OpenTelemetry Collector's `attraction` semantics:
//! actions run in order, each sees the result of the previous one.

use crate::config::collector::{ActionTarget, AttributeAction, AttributeValue, ConvertedType};
use crate::otlp::{OtlpAnyValue, OtlpKeyValue, OtlpValue};

pub(crate) fn config_value(value: &AttributeValue) -> OtlpAnyValue {
    let value = match value {
        AttributeValue::String(text) => OtlpValue::StringValue(text.clone()),
        AttributeValue::Bool(flag) => OtlpValue::BoolValue(*flag),
        AttributeValue::Int(int) => OtlpValue::IntValue(*int),
        AttributeValue::Double(double) => OtlpValue::DoubleValue(*double),
    };
    OtlpAnyValue { value: Some(value) }
}

pub(crate) fn string_value(text: String) -> Option<OtlpAnyValue> {
    Some(OtlpAnyValue {
        value: Some(OtlpValue::StringValue(text)),
    })
}

/// Sets `key` (replacing the first occurrence, or appending).
pub(crate) fn put(attributes: &mut Vec<OtlpKeyValue>, key: &str, value: OtlpAnyValue) {
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(value),
        None => attributes.push(OtlpKeyValue {
            key: key.to_owned(),
            value: Some(value),
            ..Default::default()
        }),
    }
}

fn matches_target(target: &ActionTarget, key: &str) -> bool {
    match target {
        ActionTarget::Key(wanted) => wanted == key,
        ActionTarget::Pattern(pattern) => pattern.regex().is_match(key),
    }
}

/// Applies `actions` in order to one attribute list.
pub(crate) fn apply(actions: &[AttributeAction], attributes: &mut Vec<OtlpKeyValue>) {
    for action in actions {
        match action {
            AttributeAction::Insert { key, value } => {
                if !attributes.iter().any(|kv| &kv.key == key) {
                    attributes.push(OtlpKeyValue {
                        key: key.clone(),
                        value: Some(config_value(value)),
                        ..Default::default()
                    });
                }
            }
            AttributeAction::Update { key, value } => {
                if let Some(kv) = attributes.iter_mut().find(|kv| &kv.key == key) {
                    kv.value = Some(config_value(value));
                }
            }
            AttributeAction::Upsert { key, value } => put(attributes, key, config_value(value)),
            AttributeAction::Delete(target) => {
                attributes.retain(|kv| !matches_target(target, &kv.key));
            }
            AttributeAction::Hash(target) => {
                for kv in attributes.iter_mut() {
                    if matches_target(target, &kv.key) {
                        let digest = hash_value(kv.value.as_ref());
                        kv.value = string_value(digest);
                    }
                }
            }
            AttributeAction::Extract { key, pattern } => {
                let Some(source) = attributes
                    .iter()
                    .find(|kv| &kv.key == key)
                    .and_then(|kv| as_str(kv.value.as_ref()))
                    .map(str::to_owned)
                else {
                    continue;
                };
                let regex = pattern.regex();
                // As in the OpenTelemetry Collector, a value that does not match leaves
                // the attributes unchanged; every named group of a match is upserted.
                let Some(captures) = regex.captures(&source) else {
                    continue;
                };
                for name in regex.capture_names().flatten() {
                    if let Some(group) = captures.name(name) {
                        let text = group.as_str().to_owned();
                        put(
                            attributes,
                            name,
                            OtlpAnyValue {
                                value: Some(OtlpValue::StringValue(text)),
                            },
                        );
                    }
                }
            }
            AttributeAction::Convert { key, to } => {
                if let Some(kv) = attributes.iter_mut().find(|kv| &kv.key == key) {
                    if let Some(converted) = convert(kv.value.as_ref(), *to) {
                        kv.value = Some(OtlpAnyValue {
                            value: Some(converted),
                        });
                    }
                }
            }
        }
    }
}

pub(crate) fn as_str(value: Option<&OtlpAnyValue>) -> Option<&str> {
    match value.and_then(|value| value.value.as_ref()) {
        Some(OtlpValue::StringValue(text)) => Some(text),
        _ => None,
    }
}

/// A value as text, for matching: scalars only.
pub(crate) fn as_text(value: Option<&OtlpAnyValue>) -> Option<String> {
    match value.and_then(|value| value.value.as_ref())? {
        OtlpValue::StringValue(text) => Some(text.clone()),
        OtlpValue::BoolValue(flag) => Some(flag.to_string()),
        OtlpValue::IntValue(int) => Some(int.to_string()),
        OtlpValue::DoubleValue(double) => Some(double.to_string()),
        _ => None,
    }
}

fn convert(value: Option<&OtlpAnyValue>, to: ConvertedType) -> Option<OtlpValue> {
    let value = value.and_then(|value| value.value.as_ref())?;
    match (to, value) {
        (ConvertedType::Int, OtlpValue::IntValue(_))
        | (ConvertedType::Double, OtlpValue::DoubleValue(_))
        | (ConvertedType::String, OtlpValue::StringValue(_)) => None,
        (ConvertedType::Int, OtlpValue::StringValue(text)) => {
            text.trim().parse().ok().map(OtlpValue::IntValue)
        }
        (ConvertedType::Int, OtlpValue::DoubleValue(double)) => double
            .is_finite()
            .then_some(OtlpValue::IntValue(*double as i64)),
        (ConvertedType::Int, OtlpValue::BoolValue(flag)) => {
            Some(OtlpValue::IntValue(i64::from(*flag)))
        }
        (ConvertedType::Double, OtlpValue::StringValue(text)) => {
            text.trim().parse().ok().map(OtlpValue::DoubleValue)
        }
        (ConvertedType::Double, OtlpValue::IntValue(int)) => {
            Some(OtlpValue::DoubleValue(*int as f64))
        }
        (ConvertedType::Double, OtlpValue::BoolValue(flag)) => {
            Some(OtlpValue::DoubleValue(if *flag { 1.0 } else { 0.0 }))
        }
        (ConvertedType::String, other) => as_text(Some(&OtlpAnyValue {
            value: Some(other.clone()),
        }))
        .map(OtlpValue::StringValue),
        _ => None,
    }
}

/// The contrib `hash` action's digest: hex SHA-256 of the value's bytes (strings as
/// UTF-8, integers and doubles as 8 big-endian bytes, booleans as one byte).
fn hash_value(value: Option<&OtlpAnyValue>) -> String {
    let bytes: Vec<u8> = match value.and_then(|value| value.value.as_ref()) {
        Some(OtlpValue::StringValue(text)) => text.as_bytes().to_vec(),
        Some(OtlpValue::IntValue(int)) => int.to_be_bytes().to_vec(),
        Some(OtlpValue::DoubleValue(double)) => double.to_bits().to_be_bytes().to_vec(),
        Some(OtlpValue::BoolValue(flag)) => vec![u8::from(*flag)],
        Some(OtlpValue::BytesValue(bytes)) => bytes.clone(),
        // Composite values have no canonical byte form; hash their debug text so the
        // original never leaves the collector.
        Some(other) => format!("{other:?}").into_bytes(),
        None => Vec::new(),
    };
    hex::encode(sha256(&bytes))
}

/// SHA-256 (FIPS 180-4). Small enough to keep here rather than add a dependency for
/// one digest; checked against the standard test vectors below.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, add) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(add);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::config::collector::ConfigRegex;

    fn s(key: &str, value: &str) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.to_owned(),
            value: string_value(value.to_owned()),
            ..Default::default()
        }
    }

    fn get<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a OtlpValue> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| value.value.as_ref())
    }

    fn re(text: &str) -> ConfigRegex {
        ConfigRegex(regex::Regex::new(text).unwrap())
    }

    #[test]
    fn sha256_matches_standard_vectors() {
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex::encode(sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn insert_update_upsert_follow_presence() {
        let mut attributes = vec![s("present", "old")];
        let value = AttributeValue::String("new".into());
        apply(
            &[
                AttributeAction::Insert {
                    key: "present".into(),
                    value: value.clone(),
                },
                AttributeAction::Insert {
                    key: "inserted".into(),
                    value: AttributeValue::Int(7),
                },
                AttributeAction::Update {
                    key: "absent".into(),
                    value: value.clone(),
                },
                AttributeAction::Upsert {
                    key: "upserted".into(),
                    value: AttributeValue::Bool(true),
                },
            ],
            &mut attributes,
        );
        assert_eq!(
            get(&attributes, "present"),
            Some(&OtlpValue::StringValue("old".into()))
        );
        assert_eq!(get(&attributes, "inserted"), Some(&OtlpValue::IntValue(7)));
        assert_eq!(get(&attributes, "absent"), None);
        assert_eq!(
            get(&attributes, "upserted"),
            Some(&OtlpValue::BoolValue(true))
        );
        apply(
            &[AttributeAction::Update {
                key: "present".into(),
                value,
            }],
            &mut attributes,
        );
        assert_eq!(
            get(&attributes, "present"),
            Some(&OtlpValue::StringValue("new".into()))
        );
    }

    #[test]
    fn delete_and_hash_by_key_or_pattern() {
        let mut attributes = vec![
            s("http.request.header.authorization", "Bearer x"),
            s("http.request.header.cookie", "c=1"),
            s("db.statement", "SELECT 1"),
            s("keep", "v"),
        ];
        apply(
            &[
                AttributeAction::Delete(ActionTarget::Pattern(re("^http\\.request\\.header\\."))),
                AttributeAction::Hash(ActionTarget::Key("db.statement".into())),
            ],
            &mut attributes,
        );
        assert_eq!(attributes.len(), 2);
        assert_eq!(
            get(&attributes, "db.statement"),
            Some(&OtlpValue::StringValue(hex::encode(sha256(b"SELECT 1"))))
        );
        assert_eq!(
            get(&attributes, "keep"),
            Some(&OtlpValue::StringValue("v".into()))
        );
    }

    #[test]
    fn extract_upserts_named_captures_and_ignores_non_matches() {
        let mut attributes = vec![s("http.url", "http://example.com/path?queryParam1=value1")];
        let pattern = re(r"^(?P<http_protocol>.*):\/\/(?P<http_domain>.*)\/(?P<http_path>.*)\?");
        apply(
            &[AttributeAction::Extract {
                key: "http.url".into(),
                pattern: pattern.clone(),
            }],
            &mut attributes,
        );
        assert_eq!(
            get(&attributes, "http_protocol"),
            Some(&OtlpValue::StringValue("http".into()))
        );
        assert_eq!(
            get(&attributes, "http_domain"),
            Some(&OtlpValue::StringValue("example.com".into()))
        );
        assert_eq!(
            get(&attributes, "http_path"),
            Some(&OtlpValue::StringValue("path".into()))
        );
        let mut other = vec![s("http.url", "not a url")];
        apply(
            &[AttributeAction::Extract {
                key: "http.url".into(),
                pattern,
            }],
            &mut other,
        );
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn convert_changes_type_or_leaves_value() {
        let mut attributes = vec![
            s("count", "42"),
            s("ratio", "x"),
            OtlpKeyValue {
                key: "code".into(),
                value: Some(OtlpAnyValue {
                    value: Some(OtlpValue::IntValue(200)),
                }),
                ..Default::default()
            },
        ];
        apply(
            &[
                AttributeAction::Convert {
                    key: "count".into(),
                    to: ConvertedType::Int,
                },
                AttributeAction::Convert {
                    key: "ratio".into(),
                    to: ConvertedType::Double,
                },
                AttributeAction::Convert {
                    key: "code".into(),
                    to: ConvertedType::String,
                },
            ],
            &mut attributes,
        );
        assert_eq!(get(&attributes, "count"), Some(&OtlpValue::IntValue(42)));
        assert_eq!(
            get(&attributes, "ratio"),
            Some(&OtlpValue::StringValue("x".into()))
        );
        assert_eq!(
            get(&attributes, "code"),
            Some(&OtlpValue::StringValue("200".into()))
        );
    }
}

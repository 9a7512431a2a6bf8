//! `redaction`: the contrib processor's rules on resource, span and span-event attributes
//! — keys not allowed are removed, string values matching `blocked_values` are masked
//! with `****`, values of keys matching `blocked_key_patterns` are masked whole — plus
//! spoor's built-in deny-list ([`DefaultDenyList`]), on unless the config brings its own
//! `blocked_values`. Summary attributes say what happened, at the configured verbosity.

use std::sync::LazyLock;

use regex::Regex;

use crate::collector::batch::SpanBatch;
use crate::config::collector::{RedactionConfig, RedactionSummary};
use crate::otlp::{OtlpAnyValue, OtlpKeyValue, OtlpValue};

use super::attraction::put;

const MASK: &str = "****";

/// Secret shapes masked by default. Expressions for the shapes a regex can decide; card
/// numbers are candidates checked with Luhn, so order numbers and timestamps that merely
/// have many digits stay.
static DEFAULT_PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // PEM private keys (RSA, EC, OPENSSH, ENCRYPTED, PKCS#8), also when truncated.
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        // `Bearer <token>` (RFC 6750 token68 characters).
        // At least 8 token characters, so prose ("the bearer of this note") stays.
        r"(?i)\bbearer[ \t]+[A-Za-z0-9\-._~+/]{8,}=*",
        // JWTs: base64url header and payload that both start with `{"`, and a signature
        // (empty for alg none).
        r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    ]
    .iter()
    .filter_map(|pattern| Regex::new(pattern).ok())
    .collect()
});

/// 13–19 digits, optionally grouped by single spaces or dashes.
static CARD_CANDIDATE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[0-9](?:[ -]?[0-9]){12,18}").ok());

/// Masks card numbers: candidates whose digits pass the Luhn check, start like a payment
/// card (2–6), and are not part of a longer word or number.
fn mask_card_numbers(text: &str) -> String {
    let Some(candidate) = CARD_CANDIDATE.as_ref() else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for found in candidate.find_iter(text) {
        let before = text[..found.start()].chars().next_back();
        let after = text[found.end()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let digits: Vec<u32> = found
            .as_str()
            .chars()
            .filter_map(|c| c.to_digit(10))
            .collect();
        let separators: Vec<char> = found
            .as_str()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        // One kind of separator only: "4111-1111 1111 1111" is not how cards are written.
        let consistent = separators.windows(2).all(|pair| pair[0] == pair[1]);
        let plausible = matches!(digits.first(), Some(2..=6))
            && consistent
            && !glued(before)
            && !glued(after)
            // A dash right next to the digits means a longer identifier.
            && before != Some('-')
            && after != Some('-')
            && luhn(&digits);
        if plausible {
            out.push_str(&text[last..found.start()]);
            out.push_str(MASK);
            last = found.end();
        }
    }
    out.push_str(&text[last..]);
    out
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, digit)| {
            if !index.is_multiple_of(2) {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                *digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// spoor's default deny-list, applied to one string.
pub(crate) fn mask_default_secrets(text: &str) -> String {
    let mut masked = text.to_owned();
    for pattern in DEFAULT_PATTERNS.iter() {
        if pattern.is_match(&masked) {
            masked = pattern.replace_all(&masked, MASK).into_owned();
        }
    }
    mask_card_numbers(&masked)
}

#[derive(Debug)]
pub(crate) struct Redaction {
    config: RedactionConfig,
}

#[derive(Default)]
struct Outcome {
    redacted: Vec<String>,
    masked: Vec<String>,
    ignored: usize,
}

impl Redaction {
    pub(crate) fn new(config: RedactionConfig) -> Redaction {
        Redaction { config }
    }

    pub(crate) fn process(&self, batch: &mut SpanBatch) {
        for rs in &mut batch.resource_spans {
            if let Some(resource) = rs.resource.as_mut() {
                self.redact(&mut resource.attributes);
            }
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    self.redact(&mut span.attributes);
                    for event in &mut span.events {
                        self.redact(&mut event.attributes);
                    }
                }
            }
        }
    }

    fn mask(&self, text: &str) -> String {
        let mut masked = text.to_owned();
        for pattern in &self.config.blocked_values {
            masked = pattern.regex().replace_all(&masked, MASK).into_owned();
        }
        if self.config.default_blocked_values {
            masked = mask_default_secrets(&masked);
        }
        masked
    }

    fn redact(&self, attributes: &mut Vec<OtlpKeyValue>) {
        let mut outcome = Outcome::default();
        let config = &self.config;
        attributes.retain_mut(|kv| {
            if config.ignored_keys.contains(&kv.key) {
                outcome.ignored += 1;
                return true;
            }
            if !config.allow_all_keys && !config.allowed_keys.contains(&kv.key) {
                outcome.redacted.push(kv.key.clone());
                return false;
            }
            // As in contrib, only string values are inspected.
            let Some(OtlpValue::StringValue(text)) =
                kv.value.as_mut().and_then(|value| value.value.as_mut())
            else {
                return true;
            };
            if config
                .blocked_key_patterns
                .iter()
                .any(|pattern| pattern.regex().is_match(&kv.key))
            {
                *text = MASK.to_owned();
                outcome.masked.push(kv.key.clone());
                return true;
            }
            if config
                .allowed_values
                .iter()
                .any(|pattern| pattern.regex().is_match(text))
            {
                return true;
            }
            let masked = self.mask(text);
            if masked != *text {
                *text = masked;
                outcome.masked.push(kv.key.clone());
            }
            true
        });
        self.summarize(attributes, outcome);
    }

    fn summarize(&self, attributes: &mut Vec<OtlpKeyValue>, outcome: Outcome) {
        let summary = self.config.summary;
        if summary == RedactionSummary::Silent {
            return;
        }
        let lists = [
            ("redaction.redacted", outcome.redacted),
            ("redaction.masked", outcome.masked),
        ];
        for (prefix, keys) in lists {
            if keys.is_empty() {
                continue;
            }
            add_summary(attributes, prefix, keys, summary);
        }
        if outcome.ignored > 0 {
            add_count(attributes, "redaction.ignored.count", outcome.ignored);
        }
    }
}

/// Adds to `<prefix>.keys` (debug) and `<prefix>.count`, merging with values a previous
/// redaction processor left, as contrib does.
fn add_summary(
    attributes: &mut Vec<OtlpKeyValue>,
    prefix: &str,
    mut keys: Vec<String>,
    summary: RedactionSummary,
) {
    let count = keys.len();
    if summary == RedactionSummary::Debug {
        let keys_key = format!("{prefix}.keys");
        if let Some(existing) = attributes
            .iter()
            .find(|kv| kv.key == keys_key)
            .and_then(|kv| super::attraction::as_str(kv.value.as_ref()))
        {
            keys.extend(
                existing
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            );
        }
        keys.sort();
        put(
            attributes,
            &keys_key,
            OtlpAnyValue {
                value: Some(OtlpValue::StringValue(keys.join(","))),
            },
        );
    }
    add_count(attributes, &format!("{prefix}.count"), count);
}

fn add_count(attributes: &mut Vec<OtlpKeyValue>, key: &str, count: usize) {
    let existing = attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            OtlpValue::IntValue(int) => Some(*int),
            _ => None,
        })
        .unwrap_or(0);
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    put(
        attributes,
        key,
        OtlpAnyValue {
            value: Some(OtlpValue::IntValue(existing.saturating_add(count))),
        },
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::config::collector::ConfigRegex;

    fn s(key: &str, value: &str) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.to_owned(),
            value: Some(OtlpAnyValue {
                value: Some(OtlpValue::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn get(attributes: &[OtlpKeyValue], key: &str) -> Option<OtlpValue> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }

    fn config() -> RedactionConfig {
        RedactionConfig {
            allow_all_keys: false,
            allowed_keys: vec!["description".into(), "card".into(), "secret.name".into()],
            ignored_keys: vec!["safe".into()],
            blocked_values: vec![ConfigRegex(Regex::new(r"4[0-9]{12}(?:[0-9]{3})?").unwrap())],
            allowed_values: vec![ConfigRegex(Regex::new(r"^allowed-").unwrap())],
            blocked_key_patterns: vec![ConfigRegex(Regex::new(r"^secret\.").unwrap())],
            default_blocked_values: false,
            summary: RedactionSummary::Debug,
        }
    }

    #[test]
    fn contrib_rules_and_debug_summary() {
        let redaction = Redaction::new(config());
        let mut attributes = vec![
            s("description", "plain"),
            s("card", "paid with 4111111111111111 today"),
            s("secret.name", "hunter2"),
            s("safe", "4111111111111111"),
            s("password", "x"),
            s("group", "y"),
        ];
        redaction.redact(&mut attributes);
        assert_eq!(
            get(&attributes, "description"),
            Some(OtlpValue::StringValue("plain".into()))
        );
        assert_eq!(
            get(&attributes, "card"),
            Some(OtlpValue::StringValue("paid with **** today".into()))
        );
        assert_eq!(
            get(&attributes, "secret.name"),
            Some(OtlpValue::StringValue(MASK.into()))
        );
        assert_eq!(
            get(&attributes, "safe"),
            Some(OtlpValue::StringValue("4111111111111111".into()))
        );
        assert_eq!(get(&attributes, "password"), None);
        assert_eq!(
            get(&attributes, "redaction.redacted.keys"),
            Some(OtlpValue::StringValue("group,password".into()))
        );
        assert_eq!(
            get(&attributes, "redaction.redacted.count"),
            Some(OtlpValue::IntValue(2))
        );
        assert_eq!(
            get(&attributes, "redaction.masked.keys"),
            Some(OtlpValue::StringValue("card,secret.name".into()))
        );
        assert_eq!(
            get(&attributes, "redaction.masked.count"),
            Some(OtlpValue::IntValue(2))
        );
        assert_eq!(
            get(&attributes, "redaction.ignored.count"),
            Some(OtlpValue::IntValue(1))
        );
    }

    #[test]
    fn info_summary_has_counts_only_and_silent_nothing() {
        let mut info = config();
        info.summary = RedactionSummary::Info;
        let mut attributes = vec![s("password", "x")];
        Redaction::new(info).redact(&mut attributes);
        assert_eq!(get(&attributes, "redaction.redacted.keys"), None);
        assert_eq!(
            get(&attributes, "redaction.redacted.count"),
            Some(OtlpValue::IntValue(1))
        );
        let mut silent = config();
        silent.summary = RedactionSummary::Silent;
        let mut attributes = vec![s("password", "x")];
        Redaction::new(silent).redact(&mut attributes);
        assert!(attributes.is_empty());
    }

    #[test]
    fn allowed_values_are_never_masked() {
        let redaction = Redaction::new(config());
        let mut attributes = vec![s("card", "allowed-4111111111111111")];
        redaction.redact(&mut attributes);
        assert_eq!(
            get(&attributes, "card"),
            Some(OtlpValue::StringValue("allowed-4111111111111111".into()))
        );
    }

    #[derive(serde::Deserialize)]
    struct Corpus {
        masked: Vec<MaskedCase>,
        unchanged: Vec<String>,
    }

    #[derive(serde::Deserialize)]
    struct MaskedCase {
        #[serde(rename = "in")]
        input: String,
        out: String,
    }

    /// Every secret shape in the corpus is masked exactly as expected, every look-alike
    /// passes unchanged, both directly and through the processor (default config).
    #[test]
    fn default_deny_list_corpus() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/collector/redaction_corpus.yaml");
        let corpus: Corpus = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(corpus.masked.len() >= 10 && corpus.unchanged.len() >= 10);
        let redaction = Redaction::new(RedactionConfig {
            allow_all_keys: true,
            allowed_keys: Vec::new(),
            ignored_keys: Vec::new(),
            blocked_values: Vec::new(),
            allowed_values: Vec::new(),
            blocked_key_patterns: Vec::new(),
            default_blocked_values: true,
            summary: RedactionSummary::Silent,
        });
        let mut failures = Vec::new();
        for case in &corpus.masked {
            let mut attributes = vec![s("value", &case.input)];
            redaction.redact(&mut attributes);
            let got = get(&attributes, "value");
            if got != Some(OtlpValue::StringValue(case.out.clone())) {
                failures.push(format!(
                    "{:?}: expected {:?}, got {got:?}",
                    case.input, case.out
                ));
            }
        }
        for input in &corpus.unchanged {
            let got = mask_default_secrets(input);
            if &got != input {
                failures.push(format!("{input:?} must stay unchanged, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn luhn_checks() {
        let digits = |text: &str| {
            text.chars()
                .filter_map(|c| c.to_digit(10))
                .collect::<Vec<_>>()
        };
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("378282246310005")));
        assert!(!luhn(&digits("4111111111111112")));
    }
}

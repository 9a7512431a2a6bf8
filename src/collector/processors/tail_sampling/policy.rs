//! Sampling policies evaluated on a whole trace, with the OpenTelemetry Collector
//! contrib `tailsamplingprocessor` semantics: attribute policies match when any span (its
//! own attributes or its resource's) matches; inverted matches can veto sampling; rate
//! budgets count the spans of the traces a policy sampled in the current second.

use std::time::Duration;

use crate::config::collector::{PolicyRule, SamplingPolicy, StringValues};
use crate::otlp::{OtlpKeyValue, OtlpResourceSpans, OtlpSpan, OtlpValue};

/// contrib's salt when `hash_salt` is empty.
const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// One policy's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Sampled,
    NotSampled,
    /// An inverted policy whose condition did not match: samples unless another policy
    /// says `NotSampled`.
    InvertSampled,
    /// An inverted policy whose condition matched: drops the trace whatever the other
    /// policies say.
    InvertNotSampled,
}

impl Decision {
    fn of(matched: bool) -> Decision {
        if matched {
            Decision::Sampled
        } else {
            Decision::NotSampled
        }
    }

    fn inverted(matched: bool) -> Decision {
        if matched {
            Decision::InvertNotSampled
        } else {
            Decision::InvertSampled
        }
    }

    pub(crate) fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }

    /// contrib's combination of the top-level policies' verdicts.
    pub(crate) fn combine(decisions: impl IntoIterator<Item = Decision>) -> bool {
        let (mut sampled, mut not_sampled, mut invert_sampled) = (false, false, false);
        for decision in decisions {
            match decision {
                Decision::InvertNotSampled => return false,
                Decision::Sampled => sampled = true,
                Decision::NotSampled => not_sampled = true,
                Decision::InvertSampled => invert_sampled = true,
            }
        }
        sampled || (invert_sampled && !not_sampled)
    }
}

/// What a policy sees of a trace: every span that has arrived, under its resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceView<'a> {
    pub(crate) trace_id: &'a [u8; 16],
    pub(crate) resource_spans: &'a [OtlpResourceSpans],
    pub(crate) num_spans: u64,
}

impl TraceView<'_> {
    fn spans(&self) -> impl Iterator<Item = &OtlpSpan> {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
    }

    /// Whether any resource or span attribute named `key` satisfies `matches`.
    fn any_attribute(&self, key: &str, mut matches: impl FnMut(&OtlpValue) -> bool) -> bool {
        let mut check = |attributes: &[OtlpKeyValue]| {
            attributes
                .iter()
                .filter(|kv| kv.key == key)
                .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
                .any(&mut matches)
        };
        self.resource_spans.iter().any(|rs| {
            rs.resource
                .as_ref()
                .is_some_and(|resource| check(&resource.attributes))
                || rs
                    .scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .any(|span| check(&span.attributes))
        })
    }

    /// Earliest start to latest end.
    fn duration(&self) -> Duration {
        let mut start = u64::MAX;
        let mut end = 0;
        for span in self.spans() {
            start = start.min(span.start_time_unix_nano);
            end = end.max(span.end_time_unix_nano);
        }
        Duration::from_nanos(end.saturating_sub(start))
    }
}

/// A spans-per-second budget over the processor's clock (whole seconds since it started).
#[derive(Debug, Default)]
struct SecondBudget {
    second: u64,
    used: u64,
}

impl SecondBudget {
    fn used_now(&mut self, second: u64) -> u64 {
        if self.second != second {
            self.second = second;
            self.used = 0;
        }
        self.used
    }
}

#[derive(Debug)]
enum Rule {
    AlwaysSample,
    StatusCode(Vec<i32>),
    Latency {
        threshold: Duration,
        upper_threshold: Option<Duration>,
    },
    Probabilistic {
        salt: String,
        /// Hashes at or below this are sampled.
        threshold: u64,
    },
    StringAttribute {
        key: String,
        values: StringValues,
        invert_match: bool,
    },
    NumericAttribute {
        key: String,
        min_value: i64,
        max_value: i64,
        invert_match: bool,
    },
    BooleanAttribute {
        key: String,
        value: bool,
        invert_match: bool,
    },
    SpanCount {
        min_spans: u64,
        max_spans: Option<u64>,
    },
    RateLimiting {
        spans_per_second: u64,
        budget: SecondBudget,
    },
    And(Vec<Policy>),
    Composite {
        max_total_spans_per_second: u64,
        /// In evaluation order, each with its own budget.
        sub_policies: Vec<(Policy, u64, SecondBudget)>,
    },
}

/// A configured policy with its run-time state (rate budgets).
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) name: String,
    rule: Rule,
}

impl Policy {
    pub(crate) fn new(config: &SamplingPolicy) -> Policy {
        let rule = match &config.rule {
            PolicyRule::AlwaysSample => Rule::AlwaysSample,
            PolicyRule::StatusCode(codes) => Rule::StatusCode(codes.clone()),
            PolicyRule::Latency {
                threshold,
                upper_threshold,
            } => Rule::Latency {
                threshold: *threshold,
                upper_threshold: *upper_threshold,
            },
            PolicyRule::Probabilistic {
                hash_salt,
                sampling_percentage,
            } => Rule::Probabilistic {
                salt: if hash_salt.is_empty() {
                    DEFAULT_HASH_SALT.to_owned()
                } else {
                    hash_salt.clone()
                },
                threshold: probabilistic_threshold(*sampling_percentage / 100.0),
            },
            PolicyRule::StringAttribute {
                key,
                values,
                invert_match,
            } => Rule::StringAttribute {
                key: key.clone(),
                values: values.clone(),
                invert_match: *invert_match,
            },
            PolicyRule::NumericAttribute {
                key,
                min_value,
                max_value,
                invert_match,
            } => Rule::NumericAttribute {
                key: key.clone(),
                min_value: *min_value,
                max_value: *max_value,
                invert_match: *invert_match,
            },
            PolicyRule::BooleanAttribute {
                key,
                value,
                invert_match,
            } => Rule::BooleanAttribute {
                key: key.clone(),
                value: *value,
                invert_match: *invert_match,
            },
            PolicyRule::SpanCount {
                min_spans,
                max_spans,
            } => Rule::SpanCount {
                min_spans: *min_spans,
                max_spans: *max_spans,
            },
            PolicyRule::RateLimiting { spans_per_second } => Rule::RateLimiting {
                spans_per_second: *spans_per_second,
                budget: SecondBudget::default(),
            },
            PolicyRule::And(subs) => Rule::And(subs.iter().map(Policy::new).collect()),
            PolicyRule::Composite(composite) => Rule::Composite {
                max_total_spans_per_second: composite.max_total_spans_per_second,
                sub_policies: composite
                    .sub_policies
                    .iter()
                    .map(|(policy, budget)| (Policy::new(policy), *budget, SecondBudget::default()))
                    .collect(),
            },
        };
        Policy {
            name: config.name.clone(),
            rule,
        }
    }

    /// The verdict on `trace`; `second` is the processor clock's current second.
    pub(crate) fn evaluate(&mut self, trace: &TraceView<'_>, second: u64) -> Decision {
        match &mut self.rule {
            Rule::AlwaysSample => Decision::Sampled,
            Rule::StatusCode(codes) => Decision::of(trace.spans().any(|span| {
                let code = span.status.as_ref().map_or(0, |status| status.code);
                codes.contains(&code)
            })),
            Rule::Latency {
                threshold,
                upper_threshold,
            } => {
                let duration = trace.duration();
                Decision::of(
                    duration >= *threshold && upper_threshold.is_none_or(|upper| duration <= upper),
                )
            }
            Rule::Probabilistic { salt, threshold } => {
                Decision::of(fnv1a_64(&[salt.as_bytes(), trace.trace_id]) <= *threshold)
            }
            Rule::StringAttribute {
                key,
                values,
                invert_match,
            } => {
                let matched = trace.any_attribute(key, |value| match value {
                    OtlpValue::StringValue(text) => match values {
                        StringValues::Exact(set) => set.contains(text),
                        StringValues::Regex(regexes) => {
                            regexes.iter().any(|regex| regex.regex().is_match(text))
                        }
                    },
                    _ => false,
                });
                verdict(matched, *invert_match)
            }
            Rule::NumericAttribute {
                key,
                min_value,
                max_value,
                invert_match,
            } => {
                let matched = trace.any_attribute(key, |value| {
                    matches!(value, OtlpValue::IntValue(int) if (*min_value..=*max_value).contains(int))
                });
                verdict(matched, *invert_match)
            }
            Rule::BooleanAttribute {
                key,
                value,
                invert_match,
            } => {
                let matched = trace.any_attribute(
                    key,
                    |found| matches!(found, OtlpValue::BoolValue(flag) if flag == value),
                );
                verdict(matched, *invert_match)
            }
            Rule::SpanCount {
                min_spans,
                max_spans,
            } => Decision::of(
                trace.num_spans >= *min_spans && max_spans.is_none_or(|max| trace.num_spans <= max),
            ),
            Rule::RateLimiting {
                spans_per_second,
                budget,
            } => {
                let if_sampled = budget.used_now(second).saturating_add(trace.num_spans);
                if if_sampled < *spans_per_second {
                    budget.used = if_sampled;
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Rule::And(subs) => {
                for sub in subs {
                    if !sub.evaluate(trace, second).samples() {
                        return Decision::NotSampled;
                    }
                }
                Decision::Sampled
            }
            Rule::Composite {
                max_total_spans_per_second,
                sub_policies,
            } => {
                for (sub, allocated, budget) in sub_policies {
                    if !sub.evaluate(trace, second).samples() {
                        continue;
                    }
                    let if_sampled = budget.used_now(second).saturating_add(trace.num_spans);
                    if if_sampled <= *allocated && if_sampled <= *max_total_spans_per_second {
                        budget.used = if_sampled;
                        return Decision::Sampled;
                    }
                    // Over budget: the next sub-policy may still take it (contrib).
                }
                Decision::NotSampled
            }
        }
    }
}

fn verdict(matched: bool, invert_match: bool) -> Decision {
    if invert_match {
        Decision::inverted(matched)
    } else {
        Decision::of(matched)
    }
}

/// `ratio` of the 64-bit hash space, truncated as contrib's big-float product is.
fn probabilistic_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        return u64::MAX;
    }
    // The exact product of (2^64 - 1) and the double `ratio` = mantissa / 2^shift.
    let bits = ratio.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let mantissa = if exponent == 0 {
        bits & ((1 << 52) - 1)
    } else {
        (bits & ((1 << 52) - 1)) | (1 << 52)
    };
    let shift = 1075 - exponent.max(1);
    if !(0..128).contains(&shift) {
        return 0;
    }
    let product = u128::from(u64::MAX) * u128::from(mantissa);
    u64::try_from(product >> shift).unwrap_or(u64::MAX)
}

/// FNV-1a 64 over the concatenation of `parts`.
fn fnv1a_64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::collector::{CompositePolicy, ConfigRegex};
    use crate::otlp::{OtlpAnyValue, OtlpResource, OtlpScope, OtlpScopeSpans, OtlpStatus};

    pub(crate) fn attribute(key: &str, value: OtlpValue) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.to_owned(),
            value: Some(OtlpAnyValue { value: Some(value) }),
            ..OtlpKeyValue::default()
        }
    }

    pub(crate) fn trace_id(trace: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&trace.to_be_bytes());
        id[0] = 0xc0;
        id
    }

    /// A span of `trace` with `status` (OTLP code), lasting `millis` from `start_ms`.
    pub(crate) fn span(trace: u64, status: i32, start_ms: u64, millis: u64) -> OtlpSpan {
        OtlpSpan {
            trace_id: trace_id(trace).to_vec(),
            span_id: start_ms.to_be_bytes().to_vec(),
            name: "op".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + (start_ms + millis) * 1_000_000,
            status: Some(OtlpStatus {
                code: status,
                message: String::new(),
            }),
            ..OtlpSpan::default()
        }
    }

    pub(crate) fn resource_spans(
        resource_attributes: Vec<OtlpKeyValue>,
        spans: Vec<OtlpSpan>,
    ) -> OtlpResourceSpans {
        OtlpResourceSpans {
            resource: Some(OtlpResource {
                attributes: resource_attributes,
                ..OtlpResource::default()
            }),
            scope_spans: vec![OtlpScopeSpans {
                scope: Some(OtlpScope {
                    name: "test-scope".into(),
                    ..OtlpScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn policy(rule: PolicyRule) -> Policy {
        Policy::new(&SamplingPolicy {
            name: "p".into(),
            rule,
        })
    }

    fn decide(policy: &mut Policy, trace: &[OtlpResourceSpans], second: u64) -> Decision {
        let id = trace
            .first()
            .and_then(|rs| rs.scope_spans.first()?.spans.first())
            .map(|span| <[u8; 16]>::try_from(span.trace_id.as_slice()).unwrap())
            .unwrap_or_default();
        let view = TraceView {
            trace_id: &id,
            resource_spans: trace,
            num_spans: crate::otlp::count_spans(trace) as u64,
        };
        policy.evaluate(&view, second)
    }

    /// A one-resource trace whose spans carry `attributes`.
    fn with_span_attributes(spans: usize, attributes: Vec<OtlpKeyValue>) -> Vec<OtlpResourceSpans> {
        let spans = (0..spans)
            .map(|index| OtlpSpan {
                attributes: attributes.clone(),
                ..span(1, 0, index as u64, 1)
            })
            .collect();
        vec![resource_spans(Vec::new(), spans)]
    }

    #[test]
    fn status_code_matches_any_span() {
        let mut errors = policy(PolicyRule::StatusCode(vec![2]));
        let mixed = vec![resource_spans(
            Vec::new(),
            vec![span(1, 1, 0, 5), span(1, 2, 1, 5)],
        )];
        let ok = vec![resource_spans(Vec::new(), vec![span(1, 1, 0, 5)])];
        assert_eq!(decide(&mut errors, &mixed, 0), Decision::Sampled);
        assert_eq!(decide(&mut errors, &ok, 0), Decision::NotSampled);
        let mut unset = policy(PolicyRule::StatusCode(vec![0]));
        let no_status = vec![resource_spans(
            Vec::new(),
            vec![OtlpSpan {
                status: None,
                ..span(1, 0, 0, 1)
            }],
        )];
        assert_eq!(decide(&mut unset, &no_status, 0), Decision::Sampled);
    }

    #[test]
    fn latency_uses_the_whole_trace_duration() {
        let mut slow = policy(PolicyRule::Latency {
            threshold: Duration::from_millis(5000),
            upper_threshold: None,
        });
        // No single span is slow; together they span 6 s.
        let spread = vec![resource_spans(
            Vec::new(),
            vec![span(1, 0, 0, 1000), span(1, 0, 5000, 1000)],
        )];
        let quick = vec![resource_spans(Vec::new(), vec![span(1, 0, 0, 4999)])];
        assert_eq!(decide(&mut slow, &spread, 0), Decision::Sampled);
        assert_eq!(decide(&mut slow, &quick, 0), Decision::NotSampled);
        let mut band = policy(PolicyRule::Latency {
            threshold: Duration::from_millis(5000),
            upper_threshold: Some(Duration::from_millis(10_000)),
        });
        let very_slow = vec![resource_spans(Vec::new(), vec![span(1, 0, 0, 10_001)])];
        let edge = vec![resource_spans(Vec::new(), vec![span(1, 0, 0, 10_000)])];
        assert_eq!(decide(&mut band, &spread, 0), Decision::Sampled);
        assert_eq!(decide(&mut band, &edge, 0), Decision::Sampled);
        assert_eq!(decide(&mut band, &very_slow, 0), Decision::NotSampled);
    }

    #[test]
    fn fnv1a_and_threshold_match_contrib() {
        assert_eq!(fnv1a_64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(&[b"foo", b"bar"]), fnv1a_64(&[b"foobar"]));
        assert_eq!(fnv1a_64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(probabilistic_threshold(0.0), 0);
        assert_eq!(probabilistic_threshold(0.5), 0x7fff_ffff_ffff_ffff);
        assert_eq!(probabilistic_threshold(0.25), 0x3fff_ffff_ffff_ffff);
        assert_eq!(probabilistic_threshold(1.0), u64::MAX);
    }

    #[test]
    fn probabilistic_is_deterministic_and_close_to_the_percentage() {
        let rate = |percent: f64, salt: &str| {
            let mut sampler = policy(PolicyRule::Probabilistic {
                hash_salt: salt.into(),
                sampling_percentage: percent,
            });
            let sampled: BTreeSet<u64> = (0..20_000u64)
                .filter(|trace| {
                    let trace = vec![resource_spans(
                        Vec::new(),
                        vec![span(trace.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0, 0, 1)],
                    )];
                    decide(&mut sampler, &trace, 0) == Decision::Sampled
                })
                .collect();
            sampled
        };
        assert!(rate(0.0, "").is_empty());
        assert_eq!(rate(100.0, "").len(), 20_000);
        let ten = rate(10.0, "s");
        assert!((1800..2200).contains(&ten.len()), "{}", ten.len());
        assert_eq!(ten, rate(10.0, "s"), "same salt, same traces");
        assert_ne!(ten, rate(10.0, "other"), "the salt changes the traces");
        assert!(
            rate(5.0, "s").is_subset(&ten),
            "lower rates sample a subset"
        );
    }

    #[test]
    fn string_attribute_exact_regex_resource_and_invert() {
        let route = |value: &str| {
            vec![attribute(
                "http.route",
                OtlpValue::StringValue(value.into()),
            )]
        };
        let exact = |invert_match| {
            policy(PolicyRule::StringAttribute {
                key: "http.route".into(),
                values: StringValues::Exact(["/a".to_owned()].into()),
                invert_match,
            })
        };
        let mut plain = exact(false);
        assert_eq!(
            decide(&mut plain, &with_span_attributes(2, route("/a")), 0),
            Decision::Sampled
        );
        assert_eq!(
            decide(&mut plain, &with_span_attributes(2, route("/ab")), 0),
            Decision::NotSampled
        );
        // A non-string value never matches.
        let number = vec![attribute("http.route", OtlpValue::IntValue(1))];
        assert_eq!(
            decide(&mut plain, &with_span_attributes(1, number), 0),
            Decision::NotSampled
        );
        // Resource attributes count too.
        let on_resource = vec![resource_spans(route("/a"), vec![span(1, 0, 0, 1)])];
        assert_eq!(decide(&mut plain, &on_resource, 0), Decision::Sampled);
        let mut inverted = exact(true);
        assert_eq!(
            decide(&mut inverted, &with_span_attributes(1, route("/a")), 0),
            Decision::InvertNotSampled
        );
        assert_eq!(
            decide(&mut inverted, &with_span_attributes(1, route("/z")), 0),
            Decision::InvertSampled
        );
        let mut regex = policy(PolicyRule::StringAttribute {
            key: "http.route".into(),
            values: StringValues::Regex(vec![ConfigRegex(regex::Regex::new("/b.*").unwrap())]),
            invert_match: false,
        });
        assert_eq!(
            decide(&mut regex, &with_span_attributes(1, route("/b/c")), 0),
            Decision::Sampled
        );
        assert_eq!(
            decide(&mut regex, &with_span_attributes(1, route("/a")), 0),
            Decision::NotSampled
        );
    }

    #[test]
    fn numeric_and_boolean_attributes() {
        let numeric = |invert_match| {
            policy(PolicyRule::NumericAttribute {
                key: "http.status_code".into(),
                min_value: 500,
                max_value: 599,
                invert_match,
            })
        };
        let status = |value| vec![attribute("http.status_code", value)];
        let mut plain = numeric(false);
        for (value, expected) in [
            (OtlpValue::IntValue(500), Decision::Sampled),
            (OtlpValue::IntValue(599), Decision::Sampled),
            (OtlpValue::IntValue(404), Decision::NotSampled),
            (OtlpValue::IntValue(600), Decision::NotSampled),
            (OtlpValue::StringValue("503".into()), Decision::NotSampled),
        ] {
            assert_eq!(
                decide(
                    &mut plain,
                    &with_span_attributes(1, status(value.clone())),
                    0
                ),
                expected,
                "{value:?}"
            );
        }
        let mut inverted = numeric(true);
        assert_eq!(
            decide(
                &mut inverted,
                &with_span_attributes(1, status(OtlpValue::IntValue(503))),
                0
            ),
            Decision::InvertNotSampled
        );
        assert_eq!(
            decide(
                &mut inverted,
                &with_span_attributes(1, status(OtlpValue::IntValue(200))),
                0
            ),
            Decision::InvertSampled
        );
        let mut flag = policy(PolicyRule::BooleanAttribute {
            key: "k".into(),
            value: true,
            invert_match: false,
        });
        let with =
            |value| with_span_attributes(1, vec![attribute("k", OtlpValue::BoolValue(value))]);
        assert_eq!(decide(&mut flag, &with(true), 0), Decision::Sampled);
        assert_eq!(decide(&mut flag, &with(false), 0), Decision::NotSampled);
    }

    #[test]
    fn span_count_bounds() {
        let mut count = policy(PolicyRule::SpanCount {
            min_spans: 2,
            max_spans: Some(3),
        });
        let trace = |spans| with_span_attributes(spans, Vec::new());
        assert_eq!(decide(&mut count, &trace(1), 0), Decision::NotSampled);
        assert_eq!(decide(&mut count, &trace(2), 0), Decision::Sampled);
        assert_eq!(decide(&mut count, &trace(3), 0), Decision::Sampled);
        assert_eq!(decide(&mut count, &trace(4), 0), Decision::NotSampled);
    }

    #[test]
    fn rate_limiting_counts_spans_per_second() {
        let mut limit = policy(PolicyRule::RateLimiting {
            spans_per_second: 10,
        });
        let trace = with_span_attributes(3, Vec::new());
        let in_second = |limit: &mut Policy, second| {
            (0..5)
                .map(|_| decide(limit, &trace, second) == Decision::Sampled)
                .collect::<Vec<_>>()
        };
        // 3, 6, 9 spans fit below 10; 12 does not.
        assert_eq!(in_second(&mut limit, 0), [true, true, true, false, false]);
        assert_eq!(in_second(&mut limit, 1), [true, true, true, false, false]);
        assert_eq!(in_second(&mut limit, 1), [false; 5]);
    }

    #[test]
    fn and_needs_every_sub_policy() {
        let mut both = policy(PolicyRule::And(vec![
            SamplingPolicy {
                name: "errors".into(),
                rule: PolicyRule::StatusCode(vec![2]),
            },
            SamplingPolicy {
                name: "flag".into(),
                rule: PolicyRule::BooleanAttribute {
                    key: "k".into(),
                    value: true,
                    invert_match: false,
                },
            },
        ]));
        let flagged = |status| {
            vec![resource_spans(
                Vec::new(),
                vec![OtlpSpan {
                    attributes: vec![attribute("k", OtlpValue::BoolValue(true))],
                    ..span(1, status, 0, 1)
                }],
            )]
        };
        assert_eq!(decide(&mut both, &flagged(2), 0), Decision::Sampled);
        assert_eq!(decide(&mut both, &flagged(1), 0), Decision::NotSampled);
    }

    #[test]
    fn composite_follows_order_and_budgets() {
        let sub = |name: &str, rule| SamplingPolicy {
            name: name.into(),
            rule,
        };
        // errors first with 5 spans/s, then always_sample with 2 spans/s.
        let mut composite = policy(PolicyRule::Composite(CompositePolicy {
            max_total_spans_per_second: 10,
            sub_policies: vec![
                (sub("errors", PolicyRule::StatusCode(vec![2])), 5),
                (sub("rest", PolicyRule::AlwaysSample), 2),
            ],
        }));
        let error_trace = vec![resource_spans(
            Vec::new(),
            vec![span(1, 2, 0, 1), span(1, 2, 1, 1)],
        )];
        let ok_trace = vec![resource_spans(
            Vec::new(),
            vec![span(2, 1, 0, 1), span(2, 1, 1, 1)],
        )];
        let sampled = |composite: &mut Policy, trace, second| {
            decide(composite, trace, second) == Decision::Sampled
        };
        assert!(sampled(&mut composite, &error_trace, 0)); // errors: 2
        assert!(sampled(&mut composite, &error_trace, 0)); // errors: 4
                                                           // errors' budget is spent: the next sub-policy takes it within its own.
        assert!(sampled(&mut composite, &error_trace, 0)); // rest: 2
        assert!(!sampled(&mut composite, &error_trace, 0));
        assert!(!sampled(&mut composite, &ok_trace, 0));
        // A new second refills every budget.
        assert!(sampled(&mut composite, &ok_trace, 1));
        assert!(!sampled(&mut composite, &ok_trace, 1));
        // A sub-policy without allocation samples nothing.
        let mut unallocated = policy(PolicyRule::Composite(CompositePolicy {
            max_total_spans_per_second: 10,
            sub_policies: vec![(sub("rest", PolicyRule::AlwaysSample), 0)],
        }));
        assert!(!sampled(&mut unallocated, &ok_trace, 0));
    }

    #[test]
    fn final_decision_lets_inverted_matches_veto() {
        use Decision::*;
        assert!(Decision::combine([NotSampled, Sampled]));
        assert!(!Decision::combine([Sampled, InvertNotSampled]));
        assert!(Decision::combine([InvertSampled]));
        assert!(!Decision::combine([InvertSampled, NotSampled]));
        assert!(Decision::combine([InvertSampled, NotSampled, Sampled]));
        assert!(!Decision::combine([NotSampled]));
        assert!(!Decision::combine([]));
    }
}

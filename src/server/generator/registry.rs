//! Series storage of the metrics generator: one table per label set shape, looked up
//! by label values without allocating on the hot path, bounded by a per-tenant series
//! budget, and forgotten once stale. What a table holds per series is up to the
//! processor (span metrics keep calls, size and latency together because they share
//! labels), so one lookup per span updates every metric of that label set.

use std::collections::HashMap;
use std::sync::Arc;

/// Separates label values inside a lookup key; it cannot occur in a label value the
/// processors produce (they replace it, see [`clean_value`]).
const KEY_SEPARATOR: char = '\u{1f}';

/// A classic Prometheus histogram over fixed upper bounds (seconds); the last count is
/// the `+Inf` bucket. Counts are per bucket, made cumulative when exposed.
#[derive(Debug, Clone)]
pub(super) struct Histogram {
    counts: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub(super) fn new(num_bounds: usize) -> Histogram {
        Histogram {
            counts: vec![0; num_bounds + 1].into_boxed_slice(),
            sum: 0.0,
            count: 0,
        }
    }

    pub(super) fn observe(&mut self, bounds: &[f64], value: f64) {
        let bucket = bounds.partition_point(|bound| *bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Prometheus series one histogram exposes: a bucket per bound, `+Inf`, `_sum`,
    /// `_count`.
    pub(super) fn series_cost(num_bounds: usize) -> usize {
        num_bounds + 3
    }
}

/// The series a tenant may still create, shared by all of its tables.
#[derive(Debug)]
pub(super) struct SeriesBudget {
    pub(super) max: usize,
    pub(super) active: usize,
    /// Spans that were left out because they would have created a series over `max`,
    /// since the last time the generator reported it.
    pub(super) limited: u64,
}

impl SeriesBudget {
    pub(super) fn new(max: usize) -> SeriesBudget {
        SeriesBudget {
            max,
            active: 0,
            limited: 0,
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    values: Box<[Box<str>]>,
    value: V,
    /// Generator clock (seconds) of the last update.
    touched: u64,
}

/// Series sharing one list of label names.
#[derive(Debug)]
pub(super) struct SeriesTable<V> {
    label_names: Arc<[String]>,
    /// Prometheus series each entry accounts for in the budget.
    cost: usize,
    index: HashMap<Box<str>, usize>,
    entries: Vec<Entry<V>>,
    key: String,
}

impl<V> SeriesTable<V> {
    pub(super) fn new(label_names: Vec<String>, cost: usize) -> SeriesTable<V> {
        SeriesTable {
            label_names: label_names.into(),
            cost,
            index: HashMap::new(),
            entries: Vec::new(),
            key: String::new(),
        }
    }

    pub(super) fn label_names(&self) -> &Arc<[String]> {
        &self.label_names
    }

    /// The series with these label values (in the order of the label names), created
    /// with `make` if the budget allows; `None` (and a limited span counted) if not.
    pub(super) fn get_or_create<'a>(
        &'a mut self,
        values: &[&str],
        now: u64,
        budget: &mut SeriesBudget,
        make: impl FnOnce() -> V,
    ) -> Option<&'a mut V> {
        self.key.clear();
        for (position, value) in values.iter().enumerate() {
            if position > 0 {
                self.key.push(KEY_SEPARATOR);
            }
            self.key.push_str(value);
        }
        let position = match self.index.get(self.key.as_str()) {
            Some(&position) => position,
            None => {
                if budget.active + self.cost > budget.max {
                    budget.limited += 1;
                    return None;
                }
                budget.active += self.cost;
                let position = self.entries.len();
                self.entries.push(Entry {
                    values: values.iter().map(|v| Box::<str>::from(*v)).collect(),
                    value: make(),
                    touched: now,
                });
                self.index.insert(self.key.as_str().into(), position);
                position
            }
        };
        let entry = &mut self.entries[position];
        entry.touched = now;
        Some(&mut entry.value)
    }

    /// Forgets series not updated since `oldest`, returning their budget.
    pub(super) fn remove_stale(&mut self, oldest: u64, budget: &mut SeriesBudget) {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.touched >= oldest);
        let removed = before - self.entries.len();
        if removed == 0 {
            return;
        }
        budget.active -= removed * self.cost;
        self.index.clear();
        for (position, entry) in self.entries.iter().enumerate() {
            let key = entry.values.join(&KEY_SEPARATOR.to_string());
            self.index.insert(key.into(), position);
        }
    }

    /// Every series: its label values and what the processor keeps for it.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[Box<str>], &V)> {
        self.entries
            .iter()
            .map(|entry| (&entry.values[..], &entry.value))
    }
}

/// A label value as stored: the key separator is the only character that cannot be
/// stored as is.
pub(super) fn clean_value(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(KEY_SEPARATOR) {
        value.replace(KEY_SEPARATOR, " ").into()
    } else {
        value.into()
    }
}

/// A Prometheus label name from an attribute name: every character outside
/// `[a-zA-Z0-9_]` becomes `_`, and a leading digit gets a `_` prefix (Prometheus'
/// `SanitizeLabelName`, as Tempo applies it to dimensions).
pub(super) fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// What one series looks like when exposed.
#[derive(Debug, Clone)]
pub(super) enum SampleValue {
    Counter(f64),
    Histogram {
        bounds: Arc<[f64]>,
        /// Cumulative, one per bound and the last for `+Inf`.
        cumulative: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

impl SampleValue {
    pub(super) fn histogram(bounds: &Arc<[f64]>, histogram: &Histogram) -> SampleValue {
        let mut running = 0;
        let cumulative = histogram
            .counts
            .iter()
            .map(|count| {
                running += count;
                running
            })
            .collect();
        SampleValue::Histogram {
            bounds: Arc::clone(bounds),
            cumulative,
            sum: histogram.sum,
            count: histogram.count,
        }
    }
}

/// A metric family as exposed: name without `_total`/`_bucket` suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
}

/// One series of a snapshot, labels in exposition order.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) family: Family,
    pub(super) labels: Vec<(String, String)>,
    pub(super) value: SampleValue,
}

impl Sample {
    /// The Prometheus series this sample stands for, in exposition order: the name
    /// suffix (`_total`; `_bucket`, `_sum`, `_count`), a bucket's `le` label, the value.
    pub(super) fn for_each_series(&self, mut emit: impl FnMut(&'static str, Option<String>, f64)) {
        match &self.value {
            SampleValue::Counter(value) => emit("_total", None, *value),
            SampleValue::Histogram {
                bounds,
                cumulative,
                sum,
                count,
            } => {
                for (index, in_bucket) in cumulative.iter().enumerate() {
                    let le = bounds
                        .get(index)
                        .map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
                    emit("_bucket", Some(le), *in_bucket as f64);
                }
                emit("_sum", None, *sum);
                emit("_count", None, *count as f64);
            }
        }
    }
}

/// Adds one series per entry of `table` to `out`, with `value` choosing what to expose.
pub(super) fn snapshot_table<V>(
    table: &SeriesTable<V>,
    family: Family,
    out: &mut Vec<Sample>,
    mut value: impl FnMut(&V) -> SampleValue,
) {
    let names = table.label_names();
    for (values, entry) in table.iter() {
        out.push(Sample {
            family,
            labels: names
                .iter()
                .zip(values.iter())
                .map(|(name, value)| (name.clone(), value.to_string()))
                .collect(),
            value: value(entry),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_series_and_stale_ones_return_it() {
        let mut budget = SeriesBudget::new(4);
        let mut table: SeriesTable<u64> = SeriesTable::new(vec!["a".into()], 2);
        *table.get_or_create(&["x"], 1, &mut budget, || 0).unwrap() += 1;
        *table.get_or_create(&["y"], 1, &mut budget, || 0).unwrap() += 1;
        assert!(table.get_or_create(&["z"], 1, &mut budget, || 0).is_none());
        assert_eq!((budget.active, budget.limited), (4, 1));
        // An existing series is still updated at the limit.
        *table.get_or_create(&["x"], 5, &mut budget, || 0).unwrap() += 1;
        table.remove_stale(5, &mut budget);
        assert_eq!(budget.active, 2);
        let kept: Vec<(String, u64)> = table
            .iter()
            .map(|(values, value)| (values[0].to_string(), *value))
            .collect();
        assert_eq!(kept, vec![("x".to_owned(), 2)]);
        assert!(table.get_or_create(&["z"], 6, &mut budget, || 7).is_some());
        assert_eq!(
            *table.get_or_create(&["x"], 6, &mut budget, || 0).unwrap(),
            2
        );
    }

    #[test]
    fn histogram_buckets_are_upper_bounds_inclusive() {
        let bounds = [0.1, 0.2];
        let mut histogram = Histogram::new(bounds.len());
        for value in [0.05, 0.1, 0.15, 5.0] {
            histogram.observe(&bounds, value);
        }
        let SampleValue::Histogram {
            cumulative, count, ..
        } = SampleValue::histogram(&Arc::from(&bounds[..]), &histogram)
        else {
            unreachable!()
        };
        assert_eq!(cumulative, vec![2, 3, 4]);
        assert_eq!(count, 4);
    }

    #[test]
    fn label_names_are_sanitized_like_prometheus() {
        assert_eq!(sanitize_label_name("http.route"), "http_route");
        assert_eq!(sanitize_label_name("k8s-pod"), "k8s_pod");
        assert_eq!(sanitize_label_name("9lives"), "_9lives");
    }
}

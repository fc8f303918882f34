//! How a /metrics family is declared (one row of families.rs's table) and how its series are
//! written. A row states everything about a family once: its name, type, unit, label names and
//! help; its series function only supplies label values and numbers, in the row's label order.
//! Encoding, escaping and suffixes (`_seconds`, `_total`, `_info`) are prometheus-client's.

use std::fmt;

use prometheus_client::{
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry,
};

use super::{
    buckets::{le_buckets, BucketSet},
    snapshot::Snapshot,
};
use crate::store::histogram::Histogram;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Always 1; its labels are the information. A gauge in the 0.0.4 text format.
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
}

/// Which daemons export a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Always,
    /// Only with `metrics_per_pid`.
    PerPid,
}

/// One metric family.
pub struct Family {
    /// Without the unit and type suffixes, which are added as prometheus-client adds them
    /// (see [`Family::exposed_name`]).
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    /// Label names, in the order the series function gives their values; a histogram's `le`
    /// is implied.
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub shown: Shown,
    /// Reads the family's series from what one render reads.
    pub series: fn(&Snapshot, &mut Series) -> fmt::Result,
}

impl Family {
    /// The name scrapers see: a histogram's `_bucket`, `_sum` and `_count` go after it.
    #[cfg(test)]
    pub fn exposed_name(&self) -> String {
        let mut name = self.name.to_string();
        if let Some(unit) = self.unit {
            name.push('_');
            name.push_str(unit.registry().as_str());
        }
        match self.kind {
            Kind::Counter => name.push_str("_total"),
            Kind::Info => name.push_str("_info"),
            Kind::Gauge | Kind::Histogram => {}
        }
        name
    }

    /// Writes the family's descriptor, then its series.
    pub fn encode(
        &self,
        snapshot: &Snapshot,
        enc: &mut DescriptorEncoder,
        buckets: BucketSet,
    ) -> fmt::Result {
        let unit = self.unit.map(Unit::registry);
        let kind = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Info => MetricType::Info,
        };
        let family = enc.encode_descriptor(self.name, self.help, unit.as_ref(), kind)?;
        (self.series)(
            snapshot,
            &mut Series {
                family,
                kind: self.kind,
                labels: self.labels,
                buckets,
            },
        )
    }
}

impl Unit {
    fn registry(self) -> registry::Unit {
        match self {
            Unit::Seconds => registry::Unit::Seconds,
            Unit::Bytes => registry::Unit::Bytes,
        }
    }
}

/// A sample's value: counts are integers, times and sizes may not be.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Writes one family's series. A call that does not fit the family's row (a value for a
/// histogram, the wrong number of label values) is an error, which the render turns into a
/// 500: it is a bug in the table, and the tests render every family.
pub struct Series<'a> {
    family: MetricEncoder<'a>,
    kind: Kind,
    labels: &'static [&'static str],
    buckets: BucketSet,
}

impl Series<'_> {
    fn label_set<'v>(
        &self,
        values: &[&'v str],
    ) -> Result<Vec<(&'static str, &'v str)>, fmt::Error> {
        if values.len() != self.labels.len() {
            return Err(fmt::Error);
        }
        Ok(self
            .labels
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect())
    }

    /// A counter's or a gauge's sample.
    pub fn value(&mut self, label_values: &[&str], v: impl Into<Value>) -> fmt::Result {
        let labels = self.label_set(label_values)?;
        let mut metric = self.family.encode_family(&labels)?;
        match (self.kind, v.into()) {
            (Kind::Counter, Value::Int(v)) => metric.encode_counter::<NoLabelSet, _, u64>(&v, None),
            (Kind::Counter, Value::Float(v)) => {
                metric.encode_counter::<NoLabelSet, _, u64>(&v, None)
            }
            (Kind::Gauge, Value::Int(v)) => metric.encode_gauge(&v),
            (Kind::Gauge, Value::Float(v)) => metric.encode_gauge(&v),
            (Kind::Histogram | Kind::Info, _) => Err(fmt::Error),
        }
    }

    /// A histogram's `_sum`, `_count` and buckets, with the daemon's `le` set.
    pub fn histogram(&mut self, label_values: &[&str], h: &Histogram) -> fmt::Result {
        if self.kind != Kind::Histogram {
            return Err(fmt::Error);
        }
        let labels = self.label_set(label_values)?;
        self.family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                h.total_ns as f64 / 1e9,
                h.count,
                &le_buckets(h, self.buckets),
                None,
            )
    }

    /// An info family's series.
    pub fn info(&mut self, label_values: &[&str]) -> fmt::Result {
        if self.kind != Kind::Info {
            return Err(fmt::Error);
        }
        let labels = self.label_set(label_values)?;
        self.family.encode_info(&labels)
    }
}

//! `GET /metrics`: the node's counters in the Prometheus text exposition format 0.0.4.
//!
//! Every counter set (`turn_gw::counter_set!`) gives `(name, help, value)`; sets of the same kind
//! (one per shared port) are summed by name. Names become `meshgate_<name>`, with `_total` for
//! counters; a help text saying "a gauge" makes a gauge. Counter names that encode a class or a
//! reason become one family with a label (see [`LABELLED`]), so that `sum()` over the label is
//! meaningful and dashboards need not know every reason.

use std::fmt::Write;

/// `(name, help, value)` of every counter of a set, as `counter_set!`'s `snapshot()` gives them.
pub type Snapshot = Vec<(&'static str, &'static str, u64)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn of_help(help: &str) -> Self {
        if help.contains("a gauge") {
            Kind::Gauge
        } else {
            Kind::Counter
        }
    }
}

/// One value, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Without the `meshgate_` prefix and the `_total` suffix.
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

impl Sample {
    pub fn new(name: &str, help: &str, kind: Kind, value: u64) -> Self {
        Self {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }
}

/// Counter-name prefixes that encode a label: `(prefix, family, label, family help)`. The first
/// match wins; the rest of the name is the label's value (`drop_rtp` is
/// `meshgate_datagrams_dropped_total{reason="rtp"}`).
pub const LABELLED: &[(&str, &str, &str, &str)] = &[
    (
        "datagrams_",
        "datagrams_received",
        "class",
        "datagrams received on the shared port, by class of first byte (RFC 7983)",
    ),
    (
        "drop_",
        "datagrams_dropped",
        "reason",
        "datagrams the shared port dropped before any protocol took them, by reason",
    ),
    (
        "dtls_drop_",
        "dtls_datagrams_dropped",
        "reason",
        "DTLS datagrams dropped, by reason",
    ),
    (
        "turn_drop_",
        "turn_datagrams_dropped",
        "reason",
        "TURN data dropped, by reason",
    ),
];

/// Samples of counter snapshots, with [`LABELLED`] names split into family and label.
pub fn from_snapshots(snapshots: impl IntoIterator<Item = Snapshot>) -> Vec<Sample> {
    snapshots
        .into_iter()
        .flatten()
        .map(|(name, help, value)| {
            let kind = Kind::of_help(help);
            match LABELLED
                .iter()
                .find_map(|&(prefix, family, label, family_help)| {
                    let rest = name.strip_prefix(prefix).filter(|r| !r.is_empty())?;
                    Some((family, label, family_help, rest))
                }) {
                Some((family, label, family_help, rest)) if kind == Kind::Counter => {
                    Sample::new(family, family_help, kind, value).label(label, rest)
                }
                _ => Sample::new(name, help, kind, value),
            }
        })
        .collect()
}

/// The full metric name of a family.
fn metric_name(name: &str, kind: Kind) -> String {
    let mut out = String::from("meshgate_");
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One metric family as rendered: its samples' labels (rendered) and values.
struct Family {
    name: String,
    help: String,
    kind: Kind,
    values: Vec<(String, u64)>,
}

/// Renders samples: families in first-seen order, each with HELP and TYPE before its samples;
/// samples with the same name and labels (the same counter of several ports) summed.
pub fn render(samples: Vec<Sample>) -> String {
    let mut families: Vec<Family> = Vec::new();
    for s in samples {
        let name = metric_name(&s.name, s.kind);
        let labels = if s.labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        let index = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Family {
                    name,
                    help: s.help,
                    kind: s.kind,
                    values: Vec::new(),
                });
                families.len() - 1
            }
        };
        let values = &mut families[index].values;
        match values.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, total)) => *total = total.saturating_add(s.value),
            None => values.push((labels, s.value)),
        }
    }
    let mut out = String::new();
    for Family {
        name,
        help,
        kind,
        values,
    } in families
    {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in values {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_labelled_and_typed() {
        let port = |n: u64| -> Snapshot {
            vec![
                ("datagrams_stun", "STUN datagrams received", n),
                ("datagrams_dtls", "DTLS datagrams received", 1),
                ("drop_rtp", "RTP dropped", 2),
                ("turn_allocations", "TURN allocations now (a gauge)", n),
                ("turn_allocations_total", "TURN allocations made", 7),
                ("dtls_drop_no_session", "no session", 3),
            ]
        };
        let text = render(from_snapshots([port(1), port(10)]));
        let expect = "\
# HELP meshgate_datagrams_received_total datagrams received on the shared port, by class of first byte (RFC 7983)
# TYPE meshgate_datagrams_received_total counter
meshgate_datagrams_received_total{class=\"stun\"} 11
meshgate_datagrams_received_total{class=\"dtls\"} 2
# HELP meshgate_datagrams_dropped_total datagrams the shared port dropped before any protocol took them, by reason
# TYPE meshgate_datagrams_dropped_total counter
meshgate_datagrams_dropped_total{reason=\"rtp\"} 4
# HELP meshgate_turn_allocations TURN allocations now (a gauge)
# TYPE meshgate_turn_allocations gauge
meshgate_turn_allocations 11
# HELP meshgate_turn_allocations_total TURN allocations made
# TYPE meshgate_turn_allocations_total counter
meshgate_turn_allocations_total 14
# HELP meshgate_dtls_datagrams_dropped_total DTLS datagrams dropped, by reason
# TYPE meshgate_dtls_datagrams_dropped_total counter
meshgate_dtls_datagrams_dropped_total{reason=\"no_session\"} 6
";
        assert_eq!(text, expect);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let s = Sample::new("x", "a\\b\nc", Kind::Gauge, 1).label("l", "q\"\\\n");
        assert_eq!(
            render(vec![s]),
            "# HELP meshgate_x a\\\\b\\nc\n# TYPE meshgate_x gauge\nmeshgate_x{l=\"q\\\"\\\\\\n\"} 1\n"
        );
    }

    /// The real counter sets give distinct metric names (a clash would merge two families).
    #[test]
    fn the_real_counter_sets_give_distinct_names() {
        let sets = [
            turn_gw::Counters::default().snapshot(),
            crate::dtls::DtlsCounters::default().snapshot(),
            crate::session::SessionCounters::default().snapshot(),
            crate::forward::ForwardCounters::default().snapshot(),
            crate::discovery::DiscoveryCounters::default().snapshot(),
        ];
        let mut seen = std::collections::BTreeMap::new();
        for (name, help, _) in sets.into_iter().flatten() {
            let sample = from_snapshots([vec![(name, help, 0)]]).remove(0);
            let full = metric_name(&sample.name, sample.kind);
            if let Some(other) = seen.insert((full.clone(), sample.labels.clone()), name) {
                panic!(
                    "{name} and {other} both render as {full} {:?}",
                    sample.labels
                );
            }
        }
    }
}

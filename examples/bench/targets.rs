//! The targets of issue 5 next to the figures (for the issue note; never a failure).

use crate::report::md::{fixed, fixed_or_blank};
use crate::report::{Report, Section};

/// A figure of results.json: (section, name).
type Fig = (&'static str, &'static str);

const U: &str = "1_usec_per_call";
const B: &str = "1_redis_benchmark";

struct Target {
    what: &'static str,
    measured: Fig,
    limit: f64,
    higher_is_better: bool,
    /// The same figure for the count-only C module (floor), for no module while RabbitMQ and
    /// the consumer are as busy as with ALL (control), and for the count-only C module while
    /// they are as busy (bound).
    compare: [Option<Fig>; 3],
}

const fn at_most(what: &'static str, measured: Fig, limit: f64) -> Target {
    Target {
        what,
        measured,
        limit,
        higher_is_better: false,
        compare: [None; 3],
    }
}

const fn at_least(what: &'static str, measured: Fig, limit: f64) -> Target {
    Target {
        higher_is_better: true,
        ..at_most(what, measured, limit)
    }
}

impl Target {
    /// Compared with the count-only C module only.
    const fn floor(self, floor: Fig) -> Target {
        Target {
            compare: [Some(floor), None, None],
            ..self
        }
    }

    /// Compared with the floor, the control and the bound.
    const fn floor_control_bound(self, floor: Fig, control: Fig, bound: Fig) -> Target {
        Target {
            compare: [Some(floor), Some(control), Some(bound)],
            ..self
        }
    }

    /// "yes", "**no**", or "n/a" when the figure is missing.
    fn met(&self, v: f64) -> &'static str {
        if !v.is_finite() {
            "n/a"
        } else if (self.higher_is_better && v >= self.limit)
            || (!self.higher_is_better && v <= self.limit)
        {
            "yes"
        } else {
            "**no**"
        }
    }
}

#[rustfmt::skip]
const TARGETS: [Target; 17] = [
    at_most("SET usec_per_call ratio, ALL, -P 1", (U, "P1_all_ratio"), 1.15)
        .floor((U, "P1_count_ratio")),
    at_most("SET usec_per_call ratio, mask matching nothing, -P 1", (U, "P1_nomatch_ratio"), 1.03)
        .floor((U, "P1_count_ratio")),
    at_least("SET ops/s ratio, ALL, -P 1", (B, "P1_SET_all_ops_ratio"), 0.80)
        .floor_control_bound((B, "P1_SET_count_ops_ratio"), (B, "P1_SET_busy_ops_ratio"), (B, "P1_SET_countbusy_ops_ratio")),
    at_least("SET ops/s ratio, ALL, -P 16", (B, "P16_SET_all_ops_ratio"), 0.50)
        .floor_control_bound((B, "P16_SET_count_ops_ratio"), (B, "P16_SET_busy_ops_ratio"), (B, "P16_SET_countbusy_ops_ratio")),
    at_most("SET p99 ratio, ALL, -P 1", (B, "P1_SET_all_p99_ratio"), 2.0)
        .floor_control_bound((B, "P1_SET_count_p99_ratio"), (B, "P1_SET_busy_p99_ratio"), (B, "P1_SET_countbusy_p99_ratio")),
    at_most("SET p99 ratio, ALL, -P 16", (B, "P16_SET_all_p99_ratio"), 2.0)
        .floor_control_bound((B, "P16_SET_count_p99_ratio"), (B, "P16_SET_busy_p99_ratio"), (B, "P16_SET_countbusy_p99_ratio")),
    at_least("SET ops/s ratio, mask matching nothing, -P 1", (B, "P1_SET_nomatch_ops_ratio"), 0.98)
        .floor((B, "P1_SET_count_ops_ratio")),
    at_least("SET ops/s ratio, mask matching nothing, -P 16", (B, "P16_SET_nomatch_ops_ratio"), 0.98)
        .floor((B, "P16_SET_count_ops_ratio")),
    at_most("publisher CPU µs per confirmed event", ("2_delivery", "module_cpu_us_per_event"), 8.0),
    at_least("delivery events/s ratio to raw lapin", ("2_delivery", "ratio"), 1.0),
    at_most("black-holed broker: Redis max latency ms (worst round)", ("3_blackhole", "fault_max_ms_worst"), 10.0),
    at_most("black-holed broker: events lost", ("3_blackhole", "lost"), 0.0),
    at_least("backlog drain events/s", ("4_drain", "events_per_s"), 30_000.0),
    at_most("backlog drain: PING max ms (worst round)", ("4_drain", "ping_max_ms_worst"), 5.0),
    at_most("fallback bytes per waiting event beyond the key space", ("5_memory", "fallback_bytes_per_event"), 40.0),
    at_most("retained bytes per event after the drain", ("5_memory", "retained_bytes_per_event"), 0.0),
    at_most("retained bytes per event after a second outage's drain", ("5_memory", "retained_bytes_per_event_second_outage"), 0.0),
];

/// The targets table, from the figures the measurements reported (`n/a` for those that did
/// not run).
pub fn section(rep: &Report) -> Section {
    let get = |(sec, name): Fig| rep.get(sec, name);
    let mut out = Section::default();
    out.line("");
    out.line("## Targets of issue 5");
    out.line("");
    out.line("| figure | measured | target | met | count-only C module (floor) | no module, RabbitMQ busy (control) | count-only C module, RabbitMQ busy (bound) |");
    out.line("|--------|---------:|-------:|:---:|----------------------------:|-----------------------------------:|-------------------------------------------:|");
    for t in &TARGETS {
        let v = get(t.measured);
        let met = t.met(v);
        let cmp = if t.higher_is_better { "≥" } else { "≤" };
        let compare = t.compare.map(|c| fixed_or_blank(c.map_or(f64::NAN, get)));
        out.line(format!(
            "| {} | {} | {cmp} {} | {met} | {} |",
            t.what,
            fixed(v, 3),
            t.limit,
            compare.join(" | ")
        ));
        out.put("targets_met", t.what, if met == "yes" { 1.0 } else { 0.0 });
    }
    out.line("");
    out.line("The last three columns are the same figure measured side by side for docs/profiles/count_only.c, a C module whose keyspace callback only counts (what any module subscribed to keyspace events costs on this Redis, whatever its callback does: Redis creates a temporary client and context per event and subscriber), for Redis without any module while another Redis drains a backlog through the same RabbitMQ to the same consumer (what the broker's and the consumer's work on the same cores costs Redis), and for both at once: the count-only module while RabbitMQ is as busy, the best any module that forwards events can do on this machine (it pays Redis's per-event cost and shares the cores with the broker, yet does no work of its own).");
    out.line("");
    out.line("Retained memory is measured through used_memory (section 5): the first outage's figure includes what Redis keeps once for a module's calls; the second outage's shows whether anything grows with the events.");
    out
}

//! What the measurements hand over ([`Section`]) and what the run collects from them
//! ([`Report`]), written out by [`md`] (results.md, also printed), [`json`] (results.json) and
//! [`svg`] (chart.svg).

pub mod json;
pub mod md;
pub mod svg;

use std::collections::BTreeMap;

/// A chart bar: (label, value).
pub type Bar = (String, f64);

/// One measurement's part of the report: its lines of results.md, its figures for
/// results.json and its chart bars.
#[derive(Default)]
pub struct Section {
    lines: Vec<String>,
    /// (section of results.json, name, value), in the order measured.
    figures: Vec<(&'static str, String, f64)>,
    ratio_bars: Vec<Bar>,
    rate_bars: Vec<Bar>,
}

impl Section {
    /// A line of results.md.
    pub fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    /// A figure of results.json: `name` in the object `section`.
    pub fn put(&mut self, section: &'static str, name: impl Into<String>, v: f64) {
        self.figures.push((section, name.into(), v));
    }

    /// A bar of the chart's first panel (ratios to Redis without the module).
    pub fn ratio_bar(&mut self, label: impl Into<String>, v: f64) {
        self.ratio_bars.push((label.into(), v));
    }

    /// A bar of the chart's second panel (events per second).
    pub fn rate_bar(&mut self, label: impl Into<String>, v: f64) {
        self.rate_bars.push((label.into(), v));
    }
}

/// Everything the run has: the sections in their order, and the errors.
#[derive(Default)]
pub struct Report {
    md: String,
    /// section → (name → value)
    json: BTreeMap<String, Vec<(String, f64)>>,
    ratio_bars: Vec<Bar>,
    rate_bars: Vec<Bar>,
    notes: Vec<String>,
}

impl Report {
    /// Appends a section; its lines are printed as they go into results.md.
    pub fn add(&mut self, section: Section) {
        for s in section.lines {
            println!("{s}");
            self.md.push_str(&s);
            self.md.push('\n');
        }
        for (sec, name, v) in section.figures {
            self.json
                .entry(sec.to_string())
                .or_default()
                .push((name, v));
        }
        self.ratio_bars.extend(section.ratio_bars);
        self.rate_bars.extend(section.rate_bars);
    }

    /// A measurement that failed: noted in results.json, and a heading in results.md.
    pub fn error(&mut self, name: &str, e: &str) {
        self.notes.push(format!("{name}: {e}"));
        self.add(md::error(name, e));
    }

    /// A figure already reported (NaN when its measurement did not run or failed).
    pub fn get(&self, section: &str, name: &str) -> f64 {
        self.json
            .get(section)
            .and_then(|v| v.iter().find(|(n, _)| n == name))
            .map_or(f64::NAN, |(_, v)| *v)
    }

    /// True when every measurement that ran succeeded.
    pub fn ok(&self) -> bool {
        self.notes.is_empty()
    }

    pub fn md(&self) -> &str {
        &self.md
    }
}

//! chart.svg: two panels of horizontal bars.

use super::md::fixed;
use super::{Bar, Report};
use std::fmt::Write as _;

/// Draws one panel from `y0` down; returns where the next one starts.
fn svg_panel(
    out: &mut String,
    y0: f64,
    title: &str,
    bars: &[Bar],
    unit: &str,
    reference: Option<f64>,
) -> f64 {
    let (left, width, bar_h, gap) = (230.0, 520.0, 18.0, 6.0);
    let max = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(reference.unwrap_or(0.0), f64::max)
        .max(1e-9)
        * 1.1;
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-weight="bold">{title}</text>"#,
        y0 + 14.0
    );
    let mut y = y0 + 26.0;
    for (label, v) in bars {
        let w = if v.is_finite() { v / max * width } else { 0.0 };
        let _ = writeln!(
            out,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="end">{label}</text><rect x="{left}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="#4e79a7"/><text x="{:.1}" y="{:.0}">{}{unit}</text>"##,
            left - 6.0,
            y + 13.0,
            left + w + 4.0,
            y + 13.0,
            if *v >= 100.0 {
                fixed(*v, 0)
            } else {
                fixed(*v, 3)
            }
        );
        y += bar_h + gap;
    }
    if let Some(r) = reference {
        let x = left + r / max * width;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{y:.0}" stroke="#e15759" stroke-dasharray="4 3"/>"##,
            y0 + 22.0
        );
    }
    y + 16.0
}

pub fn write(rep: &Report) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    y = svg_panel(
        &mut body,
        y,
        "1. Ratio to Redis without the module (dashed: 1.0)",
        &rep.ratio_bars,
        "",
        Some(1.0),
    );
    y = svg_panel(
        &mut body,
        y,
        "2 and 4. Events per second",
        &rep.rate_bars,
        "/s",
        None,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y
    )
}

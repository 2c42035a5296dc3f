//! results.md: the pieces that are not a measurement's (heading, machine, errors, total), and
//! the number format of its tables.

use super::Section;

/// `v` with `digits` decimals, or `n/a`.
pub fn fixed(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

/// `v` with 3 decimals, or an empty cell.
pub fn fixed_or_blank(v: f64) -> String {
    if v.is_finite() {
        fixed(v, 3)
    } else {
        String::new()
    }
}

/// The title, the command and the machine.
pub fn header(quick: bool, command: &str, machine: &[(String, String)]) -> Section {
    let mut s = Section::default();
    s.line(format!(
        "# key_evt_amqp benchmarks{}",
        if quick {
            " (--quick: small sizes, 1 round)"
        } else {
            ""
        }
    ));
    s.line("");
    s.line(format!("Command: `{command}`"));
    s.line("");
    s.line("| machine | |");
    s.line("|---|---|");
    for (k, v) in machine {
        s.line(format!("| {k} | {v} |"));
    }
    s
}

/// In place of a measurement that failed.
pub fn error(name: &str, e: &str) -> Section {
    let mut s = Section::default();
    s.line("");
    s.line(format!("## {name}: ERROR: {e}"));
    s
}

/// The last line.
pub fn footer(total_secs: f64) -> Section {
    let mut s = Section::default();
    s.line("");
    s.line(format!(
        "Total time {total_secs:.0} s. Chart: chart.svg. Machine figures are noisy when other work shares the cores."
    ));
    s
}

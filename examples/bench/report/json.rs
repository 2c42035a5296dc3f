//! results.json, through serde_json: `command`, `machine`, `errors`, then one object per
//! section of figures (sections sorted by name, figures in the order they were measured).

use super::Report;
use crate::harness::Res;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Figures rounded to 3 decimals, as readers of results.json have had them: an integral value
/// is written without a fraction (`0`, `1000000`), one that is not finite as `null`.
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let v = (self.0 * 1000.0).round() / 1000.0;
        if !v.is_finite() {
            ser.serialize_none()
        } else if v.fract() == 0.0 && v.abs() < 9e15 {
            ser.serialize_i64(v as i64)
        } else {
            ser.serialize_f64(v)
        }
    }
}

/// (name, value) pairs written as a JSON object in their order (serde_json's own map sorts).
struct Ordered<'a, V>(&'a [(String, V)]);

impl<V: Serialize> Serialize for Ordered<'_, V> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Serialized as a section of results.json: its figures in the order they were measured.
struct Figures<'a>(&'a [(String, f64)]);

impl Serialize for Figures<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(k, v)| (k, Num(*v))))
    }
}

/// results.json: the command, the machine, the errors, then one object per section.
#[derive(Serialize)]
struct Json<'a> {
    command: &'a str,
    machine: Ordered<'a, String>,
    errors: &'a [String],
    #[serde(flatten)]
    sections: BTreeMap<&'a str, Figures<'a>>,
}

pub fn write(rep: &Report, mach: &[(String, String)], command: &str) -> Res<String> {
    let json = Json {
        command,
        machine: Ordered(mach),
        errors: &rep.notes,
        sections: rep
            .json
            .iter()
            .map(|(sec, vals)| (sec.as_str(), Figures(vals)))
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&json).map_err(|e| format!("results.json: {e}"))?;
    text.push('\n');
    Ok(text)
}

//! `--html FILE`: the demo's report as one self-contained page (issue 15): inline SVG
//! charts (per scenario wall time against the floor, bytes per element), the fault
//! list, and the observation tables. It reads the same JSON value `--report` writes, so
//! the page never shows a figure the JSON does not have. No script, no external file.

use std::fmt::Write as _;

use serde_json::Value;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One bar of a horizontal bar chart: a label and up to two values (the second drawn
/// thinner, beneath: the floor).
struct Bar {
    label: String,
    value: f64,
    second: Option<f64>,
    note: String,
}

const CHART_WIDTH: f64 = 1150.0;
const LABEL_WIDTH: f64 = 430.0;
/// Characters of a label that fit left of the bars at 11 px.
const LABEL_CHARS: usize = 68;
const ROW_HEIGHT: f64 = 26.0;

/// A horizontal bar chart in SVG, on a log scale when values span more than 100×
/// (PSI wall times sit far above their floor).
fn bar_chart(id: &str, title: &str, unit: &str, bars: &[Bar], second_name: Option<&str>) -> String {
    let values: Vec<f64> =
        bars.iter().flat_map(|b| std::iter::once(b.value).chain(b.second)).filter(|v| *v > 0.0).collect();
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let log = max > 0.0 && min.is_finite() && max / min > 100.0;
    let plot = CHART_WIDTH - LABEL_WIDTH - 320.0;
    let scale = |v: f64| -> f64 {
        if v <= 0.0 || max <= 0.0 {
            0.0
        } else if log {
            let lo = (min / 2.0).log10();
            ((v.log10() - lo) / (max.log10() - lo)).clamp(0.0, 1.0) * plot
        } else {
            v / max * plot
        }
    };
    let height = 40.0 + ROW_HEIGHT * bars.len() as f64 + 24.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" width="{CHART_WIDTH}" height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{title}">"#,
        title = escape(title)
    );
    let _ = write!(
        svg,
        r#"<text x="0" y="18" font-size="15" font-weight="bold">{}{}</text>"#,
        escape(title),
        if log { " (log scale)" } else { "" }
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 34.0 + ROW_HEIGHT * i as f64;
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{ty}" font-size="11" text-anchor="end">{short}</text><rect class="bar" x="{LABEL_WIDTH}" y="{y}" width="{w:.1}" height="14" fill="#1d6fb8"><title>{label}: {value} {unit}</title></rect>"##,
            x = LABEL_WIDTH - 6.0,
            ty = y + 11.0,
            label = escape(&bar.label),
            short = escape(&shorten(&bar.label)),
            w = scale(bar.value).max(1.0),
            value = format_value(bar.value),
        );
        if let Some(second) = bar.second {
            let _ = write!(
                svg,
                r##"<rect class="floor" x="{LABEL_WIDTH}" y="{fy}" width="{w:.1}" height="6" fill="#e07b00"><title>floor: {value} {unit}</title></rect>"##,
                fy = y + 15.0,
                w = scale(second).max(1.0),
                value = format_value(second),
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{ty}" font-size="11">{value} {unit}{note}</text>"#,
            x = LABEL_WIDTH + scale(bar.value).max(1.0) + 6.0,
            ty = y + 11.0,
            value = format_value(bar.value),
            note = if bar.note.is_empty() { String::new() } else { format!(" · {}", escape(&bar.note)) },
        );
    }
    if let Some(second_name) = second_name {
        let y = height - 10.0;
        let _ = write!(
            svg,
            r##"<rect x="{LABEL_WIDTH}" y="{ry}" width="12" height="8" fill="#1d6fb8"/><text x="{t1}" y="{y}" font-size="11">measured</text><rect x="{r2}" y="{ry}" width="12" height="6" fill="#e07b00"/><text x="{t2}" y="{y}" font-size="11">{second_name}</text>"##,
            ry = y - 8.0,
            t1 = LABEL_WIDTH + 16.0,
            r2 = LABEL_WIDTH + 90.0,
            t2 = LABEL_WIDTH + 106.0,
            second_name = escape(second_name),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A label cut to fit left of the bars (the full text is in the bar's tooltip and the
/// scenario table).
fn shorten(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        return label.to_string();
    }
    let mut short: String = label.chars().take(LABEL_CHARS - 1).collect();
    short.push('…');
    short
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A table of any JSON: an object of scalars as two columns, an array of objects with
/// one column per key, an object of objects with one row per key.
fn json_table(value: &Value) -> String {
    let mut html = String::new();
    match value {
        Value::Object(map) if map.values().all(|v| !v.is_object() && !v.is_array()) => {
            html.push_str("<table><tr><th>Who</th><th>What</th></tr>");
            for (k, v) in map {
                let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(&text_of(v)));
            }
            html.push_str("</table>");
        }
        Value::Object(map) => {
            let rows: Vec<Value> = map
                .iter()
                .map(|(k, v)| {
                    let mut row = serde_json::Map::new();
                    row.insert("".into(), Value::String(k.clone()));
                    match v {
                        Value::Object(inner) => row.extend(inner.clone()),
                        other => {
                            row.insert("value".into(), other.clone());
                        }
                    }
                    Value::Object(row)
                })
                .collect();
            html.push_str(&json_table(&Value::Array(rows)));
        }
        Value::Array(rows) => {
            let mut columns: Vec<String> = Vec::new();
            for row in rows {
                if let Value::Object(map) = row {
                    for k in map.keys() {
                        if !columns.contains(k) {
                            columns.push(k.clone());
                        }
                    }
                }
            }
            html.push_str("<table><tr>");
            for c in &columns {
                let _ = write!(html, "<th>{}</th>", escape(c));
            }
            html.push_str("</tr>");
            for row in rows {
                html.push_str("<tr>");
                for c in &columns {
                    let cell = &row[c.as_str()];
                    let inner = if cell.is_object() || cell.is_array() {
                        json_table(cell)
                    } else {
                        escape(&text_of(cell))
                    };
                    let _ = write!(html, "<td>{inner}</td>");
                }
                html.push_str("</tr>");
            }
            html.push_str("</table>");
        }
        other => html.push_str(&escape(&text_of(other))),
    }
    html
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1b1f24}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.88em}th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}th{background:#eef1f4}.ok{color:#1a7f37}.bad{color:#cf222e}svg.chart{display:block;margin:1em 0;background:#fff}";

/// The page for a demo report.
pub fn render(report: &Value) -> String {
    let scenarios = report["scenarios"].as_array().cloned().unwrap_or_default();
    let faults = report["faults"].as_array().cloned().unwrap_or_default();
    let passed = report["passed"].as_bool().unwrap_or(false);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>xmcredit simulator report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        html,
        "<h1>xmcredit simulator report</h1><p id=\"verdict\" class=\"{}\">{}</p>",
        if passed { "ok" } else { "bad" },
        if passed {
            "Every result matched its plaintext answer and every fault was handled."
        } else {
            "FAILED: see the rows marked below."
        }
    );
    let alliance = &report["alliance"];
    let _ = write!(
        html,
        "<p>Nodes: {}; {} registered entities; {} applicants per bank; seed {}; whole run {} s. Timings were taken on a shared machine: read them as ratios to the floor measured in the same run.</p>",
        escape(&alliance["nodes"].as_array().map(|n| n.iter().map(text_of).collect::<Vec<_>>().join(", ")).unwrap_or_default()),
        text_of(&alliance["entities"]),
        text_of(&alliance["applicants_per_bank"]),
        text_of(&alliance["seed"]),
        format_value(report["wall_s"].as_f64().unwrap_or(0.0)),
    );

    let label = |s: &Value| format!("{} ({})", text_of(&s["name"]), text_of(&s["output"]));
    let wall: Vec<Bar> = scenarios
        .iter()
        .map(|s| Bar {
            label: label(s),
            value: s["wall_s"].as_f64().unwrap_or(0.0),
            second: s["floor_s"].as_f64(),
            note: s["ratio_to_floor"].as_f64().map(|r| format!("{r:.1}× floor")).unwrap_or_default(),
        })
        .collect();
    html.push_str("<h2>Wall time per scenario</h2>");
    html.push_str(&bar_chart(
        "wall-time",
        "Wall time against the curve-operation floor",
        "s",
        &wall,
        Some("floor (raw curve operations)"),
    ));
    let per_element: Vec<Bar> = scenarios
        .iter()
        .filter_map(|s| {
            let elements: u64 = s["sizes"].as_object()?.values().filter_map(Value::as_u64).sum();
            let bytes = s["bytes_total"].as_u64()?;
            (elements > 0).then(|| Bar {
                label: label(s),
                value: bytes as f64 / elements as f64,
                second: None,
                note: format!("{bytes} B over {elements} elements"),
            })
        })
        .collect();
    html.push_str("<h2>Bytes on the wire per element</h2>");
    html.push_str(&bar_chart(
        "bytes-per-element",
        "Bytes per element (all parties' set sizes)",
        "B",
        &per_element,
        None,
    ));

    html.push_str("<h2>Scenarios</h2><table id=\"scenarios\"><tr><th>Scenario</th><th>Computation</th><th>Use</th><th>Output</th><th>Sizes</th><th>Wall s</th><th>Floor s</th><th>Bytes</th><th>Verified</th><th>Detail</th></tr>");
    for s in &scenarios {
        let sizes = s["sizes"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let verified = s["verified"].as_bool().unwrap_or(false);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&text_of(&s["name"])),
            escape(&text_of(&s["computation"])),
            escape(&text_of(&s["use"])),
            escape(&text_of(&s["output"])),
            escape(&sizes),
            format_value(s["wall_s"].as_f64().unwrap_or(0.0)),
            s["floor_s"].as_f64().map(format_value).unwrap_or_default(),
            text_of(&s["bytes_total"]),
            if verified { "ok" } else { "bad" },
            if verified { "yes" } else { "NO" },
            escape(&text_of(&s["detail"])),
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Faults injected</h2>");
    if faults.is_empty() {
        html.push_str("<p>None (run without <code>--no-faults</code> to inject them).</p>");
    } else {
        html.push_str("<table id=\"faults\"><tr><th>Id</th><th>Fault</th><th>Expected</th><th>Observed</th><th>Handled</th></tr>");
        for f in &faults {
            let ok = f["passed"].as_bool().unwrap_or(false);
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&text_of(&f["id"])),
                escape(&text_of(&f["name"])),
                escape(&text_of(&f["expected"])),
                escape(&text_of(&f["observed"])),
                if ok { "ok" } else { "bad" },
                if ok { "yes" } else { "NO" },
            );
        }
        html.push_str("</table>");
    }
    // Every observation section the report carries (what each node could see), whatever
    // its shape: the per-role summary and any per-node table.
    if let Value::Object(map) = report {
        for (key, value) in map.iter().filter(|(k, _)| k.contains("observ")) {
            let _ = write!(html, "<h2>Observations: <code>{}</code></h2>{}", escape(key), json_table(value));
        }
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_and_fault_appears_and_text_is_escaped() {
        let report = serde_json::json!({
            "passed": true,
            "alliance": { "nodes": ["credit-center", "bank-a"], "entities": 10, "applicants_per_bank": 5, "seed": 1 },
            "scenarios": [
                { "name": "psi <script>", "computation": "psi", "output": "intersection", "sizes": { "a": 10, "b": 30 },
                  "wall_s": 0.5, "floor_s": 0.001, "ratio_to_floor": 500.0, "bytes_total": 4000, "verified": true, "detail": "x" },
                { "name": "secagg", "computation": "secagg", "output": "sum", "sizes": { "a": 2 },
                  "wall_s": 0.2, "bytes_total": 100, "verified": true, "detail": "y" }
            ],
            "faults": [ { "id": "stream-flood", "name": "flood", "expected": "e", "observed": "o", "passed": true } ],
            "observations": { "network": "points" },
        });
        let page = render(&report);
        assert!(page.contains("psi &lt;script&gt;") && !page.contains("<script>"));
        assert_eq!(page.matches("class=\"bar\"").count(), 4, "two scenarios in each of two charts");
        assert_eq!(page.matches("class=\"floor\"").count(), 1, "only the PSI row has a floor");
        assert!(page.contains("(log scale)"), "0.001 s against 0.5 s spans more than 100×");
        assert!(page.contains(">100 B · 4000 B over 40 elements<"), "4000 B over 40 elements: {page}");
        assert!(page.contains("stream-flood") && page.contains("points"));
    }
}

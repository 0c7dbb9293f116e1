//! The Grafana dashboard under `docs/` and what a node serves: every metric a panel
//! shows must be a family in a scrape.

/// The metric names the dashboard's panels query, prefix `codex_` or `libp2p_`, once
/// each, in the order they appear.
pub fn metric_names() -> anyhow::Result<Vec<String>> {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json"))?;
    let mut names: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("codex_") || w.starts_with("libp2p_"))
            {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
    }
    Ok(names)
}

/// Whether `scrape` (OpenMetrics text) describes the family that `name` (a sample's
/// name: `_total`, `_count`, `_sum`, `_bucket` on counters and histograms) belongs to.
/// A family is described (`# TYPE`) even before it has a sample.
pub fn served(scrape: &str, name: &str) -> bool {
    let family = ["_total", "_count", "_sum", "_bucket"]
        .iter()
        .fold(name, |n, suffix| n.trim_end_matches(suffix));
    scrape.contains(&format!("# TYPE {family} "))
}

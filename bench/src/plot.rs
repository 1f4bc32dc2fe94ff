//! The report's plots, drawn here (no external tools): tokens/s against concurrency for both
//! servers, and the distribution of 1-token request latency.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

use crate::workloads::{median, Results, CONCURRENCY};

/// Fonts the plots can use; the first one found is registered.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = (|| {
            let path = FONTS
                .iter()
                .find(|p| Path::new(p).is_file())
                .context("no TrueType font found (apt install fonts-dejavu-core)")?;
            let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| anyhow::anyhow!("bad font {path}"))?;
            Ok(())
        })();
    });
    result
}

const MB_COLOR: RGBColor = RGBColor(0, 110, 200);
const LS_COLOR: RGBColor = RGBColor(220, 90, 20);
const OTHER: RGBColor = RGBColor(60, 160, 60);
const GREY: RGBColor = RGBColor(120, 120, 120);

pub fn throughput(r: &Results, out: &Path) -> Result<()> {
    font()?;
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mb: Vec<(f64, f64)> = CONCURRENCY.iter().zip(&r.mb_tps).map(|(n, v)| (*n as f64, median(v))).collect();
    let ls: Vec<(f64, f64)> = CONCURRENCY.iter().zip(&r.ls_tps).map(|(n, v)| (*n as f64, median(v))).collect();
    let top = mb.iter().chain(&ls).map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("Tokens/s vs concurrent streams (SmolLM2, same threads and slots)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.5f64..17.0f64).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrent streams")
        .y_desc("tokens/s (1 stream: decode rate; more: aggregate)")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (data, color, name) in [(&mb, MB_COLOR, "Model Bucket"), (&ls, LS_COLOR, "llama-server")] {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(3)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(data.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// One line of a panel: its name, its samples, its colour.
type Series<'a> = (&'a str, &'a Vec<f64>, RGBColor);

pub fn latency(r: &Results, out: &Path) -> Result<()> {
    font()?;
    let root = BitMapBackend::new(out, (1500, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(44);
    title.titled(
        "1-token request latency, cumulative distribution: each panel one pair measured together",
        ("sans-serif", 22),
    )?;
    let panels = body.split_evenly((1, 3));
    let pairs: Vec<(&str, Vec<Series>)> = vec![
        (
            "Model Bucket vs llama-server",
            vec![("Model Bucket", &r.lat_mb, MB_COLOR), ("llama-server", &r.lat_ls, LS_COLOR)],
        ),
        (
            "Model Bucket: router vs worker",
            vec![("through the router", &r.lat_router, MB_COLOR), ("worker, no router", &r.lat_worker, GREY)],
        ),
        (
            "llama-server: plain vs router mode",
            vec![("plain", &r.lat_ls_direct, LS_COLOR), ("router mode", &r.lat_ls_router, OTHER)],
        ),
    ];
    for (area, (caption, series)) in panels.iter().zip(pairs) {
        let all: Vec<f64> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
        if all.is_empty() {
            continue;
        }
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min) * 0.97;
        let hi = crate::workloads::pct(&all, 99.0) * 1.03;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0.0..1.0)?;
        chart.configure_mesh().x_desc("ms").y_desc("fraction").label_style(("sans-serif", 13)).draw()?;
        for (name, v, color) in series {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            let n = s.len() as f64;
            let pts: Vec<(f64, f64)> = s.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n)).collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

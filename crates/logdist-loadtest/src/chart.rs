//! chart.svg: delivered throughput per analyzer (and offered in total) over time,
//! and latency p50 / p99 / max over time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;
use crate::timeline::TimelineRow;

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn write_svg(path: &Path, rows: &[TimelineRow], summary: &Summary) -> Result<(), String> {
    let rows: Vec<&TimelineRow> = rows.iter().filter(|r| r.interval > 0.2).collect();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(450);
    let t_max = rows.last().map(|r| r.t).unwrap_or(1.0).max(1.0);

    // Throughput.
    let rate = |n: u64, r: &TimelineRow| n as f64 / r.interval;
    let y_max = rows
        .iter()
        .map(|r| rate(r.offered, r).max(rate(r.delivered, r)))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "logdist {} - throughput ({})",
                summary.profile,
                if summary.passed { "PASS" } else { "FAIL" }
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("messages / s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    // Chaos and other events as vertical markers.
    for e in &summary.events {
        let color = match e.kind.as_str() {
            "kill" => RED.mix(0.5),
            "stall" => BLUE.mix(0.4),
            "restart" => GREEN.mix(0.5),
            _ => continue,
        };
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(e.at_secs, 0.0), (e.at_secs, y_max)],
                color.stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
        let label = format!("a{} {}", e.analyzer.unwrap_or(0), e.kind);
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (e.at_secs, y_max * 0.97),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))
            .map_err(|e| err(&e))?;
    }
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (r.t, rate(r.offered, r))),
            BLACK.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label("offered (all emitters)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let gray = RGBColor(160, 160, 160);
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (r.t, rate(r.delivered, r))),
            gray.stroke_width(3),
        ))
        .map_err(|e| err(&e))?
        .label("delivered (all analyzers)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(3)));
    let analyzers = rows.first().map(|r| r.per_analyzer.len()).unwrap_or(0);
    for a in 0..analyzers {
        let color = PALETTE[a % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                rows.iter()
                    .map(|r| (r.t, rate(r.per_analyzer.get(a).copied().unwrap_or(0), r))),
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(format!("analyzer a{a}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;

    // Latency, log scale in ms.
    let ms = |us: f64| (us / 1000.0).max(0.001);
    let l_max = rows
        .iter()
        .map(|r| ms(r.latency.max_us))
        .fold(1.0, f64::max)
        * 1.5;
    let l_min = rows
        .iter()
        .filter(|r| r.latency.count > 0)
        .map(|r| ms(r.latency.p50_us))
        .fold(f64::MAX, f64::min)
        .min(l_max / 10.0)
        / 2.0;
    let l_min = if l_min.is_finite() {
        l_min.max(0.001)
    } else {
        0.001
    };
    let mut chart = ChartBuilder::on(&bottom)
        .caption("send -> receive latency", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, (l_min..l_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms (log)")
        .draw()
        .map_err(|e| err(&e))?;
    let with_data: Vec<&&TimelineRow> = rows.iter().filter(|r| r.latency.count > 0).collect();
    type Pick = fn(&TimelineRow) -> f64;
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", PALETTE[2], |r| r.latency.p50_us),
        ("p99", PALETTE[1], |r| r.latency.p99_us),
        ("max", PALETTE[3], |r| r.latency.max_us),
    ];
    for (name, color, f) in series {
        chart
            .draw_series(LineSeries::new(
                with_data.iter().map(|r| (r.t, ms(f(r)))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

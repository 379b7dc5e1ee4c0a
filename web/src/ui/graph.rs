//! A deterministic force-directed layout for the graph of links (Fruchterman–Reingold),
//! computed on the server so the page is plain SVG.

/// A node placed in the unit square `[0, 1]²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Placed {
    pub(crate) x: f64,
    pub(crate) y: f64,
}

/// Places `n` nodes joined by `edges` (pairs of node indexes); same input, same output.
pub(crate) fn layout(n: usize, edges: &[(usize, usize)]) -> Vec<Placed> {
    if n == 0 {
        return Vec::new();
    }
    // Start on a circle, then let springs (edges) pull and charges (all pairs) push.
    let mut pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            (0.5 + 0.4 * a.cos(), 0.5 + 0.4 * a.sin())
        })
        .collect();
    let k = (1.0 / n as f64).sqrt();
    let iterations = if n > 300 { 60 } else { 200 };
    let mut temperature = 0.1;
    let mut shift = vec![(0.0f64, 0.0f64); n];
    for _ in 0..iterations {
        shift.iter_mut().for_each(|d| *d = (0.0, 0.0));
        for i in 0..n {
            for j in (i + 1)..n {
                let (dx, dy) = (pos[i].0 - pos[j].0, pos[i].1 - pos[j].1);
                let d2 = (dx * dx + dy * dy).max(1e-6);
                let f = k * k / d2;
                shift[i].0 += dx * f;
                shift[i].1 += dy * f;
                shift[j].0 -= dx * f;
                shift[j].1 -= dy * f;
            }
        }
        for &(a, b) in edges {
            if a >= n || b >= n || a == b {
                continue;
            }
            let (dx, dy) = (pos[a].0 - pos[b].0, pos[a].1 - pos[b].1);
            let d = (dx * dx + dy * dy).sqrt().max(1e-3);
            let f = d / k;
            shift[a].0 -= dx * f;
            shift[a].1 -= dy * f;
            shift[b].0 += dx * f;
            shift[b].1 += dy * f;
        }
        for (p, d) in pos.iter_mut().zip(&shift) {
            let len = (d.0 * d.0 + d.1 * d.1).sqrt().max(1e-9);
            let step = len.min(temperature);
            p.0 += d.0 / len * step;
            p.1 += d.1 / len * step;
        }
        temperature *= 0.97;
    }
    // Fit into the unit square with a margin.
    let (min_x, max_x) = bounds(pos.iter().map(|p| p.0));
    let (min_y, max_y) = bounds(pos.iter().map(|p| p.1));
    pos.iter()
        .map(|p| Placed {
            x: 0.05 + 0.9 * scale(p.0, min_x, max_x),
            y: 0.05 + 0.9 * scale(p.1, min_y, max_y),
        })
        .collect()
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn scale(v: f64, lo: f64, hi: f64) -> f64 {
    if hi - lo < 1e-9 {
        0.5
    } else {
        (v - lo) / (hi - lo)
    }
}

/// A label placed beside its node, in the drawing's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Label {
    pub(crate) x: f64,
    pub(crate) y: f64,
    /// Whether it ends at `x` (it sits left of its node) rather than starts there.
    pub(crate) end: bool,
}

/// Width of one character of a label, and a label's height, in the drawing's pixels (a
/// generous guess for the page's sans-serif at 13 px).
const CHAR_WIDTH: f64 = 7.8;
const LABEL_HEIGHT: f64 = 16.0;

/// Places the labels of nodes at `points` (pixels, in a `w`×`h` drawing) of `chars`
/// characters each, most important first (`order`): right of the node, else left, else
/// above or below; a label that fits nowhere without covering one already placed (or
/// leaving the drawing) is not drawn (its node's title still names it on hover, and the
/// view zooms). No two drawn labels overlap.
pub(crate) fn place_labels(
    points: &[(f64, f64)],
    chars: &[usize],
    order: &[usize],
    (w, h): (f64, f64),
) -> Vec<Option<Label>> {
    type Rect = (f64, f64, f64, f64);
    let overlaps = |a: &Rect, b: &Rect| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
    let mut taken: Vec<Rect> = Vec::new();
    let mut out = vec![None; points.len()];
    for &i in order {
        let (x, y) = points[i];
        let width = chars[i] as f64 * CHAR_WIDTH;
        // (label anchor x, baseline y, ends at x)
        let candidates = [
            (x + 12.0, y + 4.0, false),
            (x - 12.0, y + 4.0, true),
            (x - width / 2.0, y - 12.0, false),
            (x - width / 2.0, y + 22.0, false),
        ];
        for (lx, ly, end) in candidates {
            let left = if end { lx - width } else { lx };
            let rect = (left, ly - LABEL_HEIGHT + 4.0, left + width, ly + 4.0);
            let inside = rect.0 >= 0.0 && rect.1 >= 0.0 && rect.2 <= w && rect.3 <= h;
            if inside && !taken.iter().any(|t| overlaps(t, &rect)) {
                taken.push(rect);
                out[i] = Some(Label { x: lx, y: ly, end });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{CHAR_WIDTH, LABEL_HEIGHT, layout, place_labels};

    #[test]
    fn labels_never_overlap_and_the_first_always_shows() {
        // Forty nodes crowded into a corner, with long titles.
        let points: Vec<(f64, f64)> = (0..40)
            .map(|i| (50.0 + (i % 8) as f64 * 9.0, 40.0 + (i / 8) as f64 * 7.0))
            .collect();
        let chars = vec![30; 40];
        let order: Vec<usize> = (0..40).collect();
        let labels = place_labels(&points, &chars, &order, (1000.0, 700.0));
        assert!(labels[0].is_some(), "the most important one is drawn");
        let drawn: Vec<_> = labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i, l)))
            .collect();
        assert!(drawn.len() < 40, "a crowd cannot all be labelled");
        let rect = |(i, l): (usize, super::Label)| {
            let width = chars[i] as f64 * CHAR_WIDTH;
            let left = if l.end { l.x - width } else { l.x };
            (left, l.y - LABEL_HEIGHT + 4.0, left + width, l.y + 4.0)
        };
        for (n, a) in drawn.iter().enumerate() {
            for b in &drawn[n + 1..] {
                let (a, b) = (rect(*a), rect(*b));
                assert!(
                    !(a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3),
                    "{a:?} overlaps {b:?}"
                );
            }
        }
        // Spread out, every label shows.
        let apart: Vec<(f64, f64)> = (0..5).map(|i| (100.0 + i as f64 * 150.0, 300.0)).collect();
        let labels = place_labels(&apart, &[10; 5], &[0, 1, 2, 3, 4], (1000.0, 700.0));
        assert!(labels.iter().all(Option::is_some), "{labels:?}");
    }

    #[test]
    fn linked_nodes_end_closer_than_unlinked_ones() {
        // Two triangles joined by nothing: within a triangle nodes sit closer.
        let edges = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)];
        let placed = layout(6, &edges);
        assert_eq!(placed, layout(6, &edges), "deterministic");
        let d = |a: usize, b: usize| {
            ((placed[a].x - placed[b].x).powi(2) + (placed[a].y - placed[b].y).powi(2)).sqrt()
        };
        assert!(d(0, 1) < d(0, 4), "{placed:?}");
        assert!(d(3, 5) < d(2, 3), "{placed:?}");
        for p in &placed {
            assert!(
                (0.0..=1.0).contains(&p.x) && (0.0..=1.0).contains(&p.y),
                "{p:?}"
            );
        }
        assert!(layout(0, &[]).is_empty());
        assert_eq!(layout(1, &[(0, 0)]).len(), 1);
    }
}

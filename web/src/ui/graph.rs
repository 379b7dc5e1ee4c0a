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

#[cfg(test)]
mod tests {
    use super::layout;

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

//! The graph of links between memories: around one memory (breadth-first over links and
//! backlinks), or of the memories that take part in a link.

use std::collections::{HashMap, HashSet, VecDeque};

use mnemon_api::{GraphEdge, GraphNode, GraphView};
use mnemon_crdt::{Memory, MemoryId};

/// The memories within `depth` links of `center` (both directions), nearest first, at
/// most `limit`; edges are the links among the memories kept. Nothing if `center` is not
/// among `all`.
pub fn around(all: &[Memory], center: MemoryId, depth: usize, limit: usize) -> GraphView {
    let index: HashMap<MemoryId, usize> = all.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    // Neighbours both ways, only among memories present (a link to a deleted or unshared
    // memory leads nowhere).
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    for (i, m) in all.iter().enumerate() {
        for target in m.links.keys() {
            if let Some(&j) = index.get(target)
                && i != j
            {
                neighbours[i].push(j);
                neighbours[j].push(i);
            }
        }
    }
    let mut kept: Vec<(usize, Option<usize>)> = Vec::new();
    let mut truncated = false;
    if let Some(&start) = index.get(&center) {
        let mut seen = HashSet::from([start]);
        let mut queue = VecDeque::from([(start, 0usize)]);
        while let Some((i, d)) = queue.pop_front() {
            if kept.len() == limit {
                truncated = true;
                break;
            }
            kept.push((i, Some(d)));
            if d == depth {
                continue;
            }
            for &j in &neighbours[i] {
                if seen.insert(j) {
                    queue.push_back((j, d + 1));
                }
            }
        }
    }
    view(all, &index, &kept, truncated)
}

/// The graph of `linked` (memories that each take part in a link, as
/// `Store::linked` gives them), in their order; `truncated` if there were more.
pub fn of_linked(linked: &[Memory], truncated: bool) -> GraphView {
    let index: HashMap<MemoryId, usize> =
        linked.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    let kept: Vec<(usize, Option<usize>)> = (0..linked.len()).map(|i| (i, None)).collect();
    view(linked, &index, &kept, truncated)
}

/// The nodes `kept` of `all` (with their distances) and the links among them.
fn view(
    all: &[Memory],
    index: &HashMap<MemoryId, usize>,
    kept: &[(usize, Option<usize>)],
    truncated: bool,
) -> GraphView {
    let members: HashSet<usize> = kept.iter().map(|(i, _)| *i).collect();
    let nodes = kept
        .iter()
        .map(|&(i, distance)| GraphNode {
            id: all[i].id.to_string(),
            title: all[i].title.clone(),
            kind: all[i].kind.clone(),
            collection: all[i].collection.to_string(),
            distance,
        })
        .collect();
    let mut edges = Vec::new();
    for &(i, _) in kept {
        for (target, relation) in &all[i].links {
            if let Some(&j) = index.get(target)
                && members.contains(&j)
                && i != j
            {
                edges.push(GraphEdge {
                    source: all[i].id.to_string(),
                    target: target.to_string(),
                    relation: relation.clone(),
                });
            }
        }
    }
    GraphView {
        nodes,
        edges,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnemon_crdt::{CollectionId, Timestamp};

    fn memory(n: u128, links: &[u128]) -> Memory {
        Memory {
            id: MemoryId::from_u128(n),
            collection: CollectionId::from_u128(1),
            title: format!("m{n}"),
            content: String::new(),
            tags: Default::default(),
            kind: "note".into(),
            importance: 0.5,
            source: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            author: String::new(),
            links: links
                .iter()
                .map(|&t| (MemoryId::from_u128(t), "related".to_owned()))
                .collect(),
            task: None,
        }
    }

    fn titles(g: &GraphView) -> Vec<(String, Option<usize>)> {
        g.nodes
            .iter()
            .map(|n| (n.title.clone(), n.distance))
            .collect()
    }

    #[test]
    fn depth_follows_links_both_ways_and_limits_cut_the_farthest() {
        // 1 → 2 → 3 → 4, 5 → 1 (a backlink of 1), 6 alone, 2 → 99 (absent).
        let all = [
            memory(1, &[2]),
            memory(2, &[3, 99]),
            memory(3, &[4]),
            memory(4, &[]),
            memory(5, &[1]),
            memory(6, &[]),
        ];
        let g = around(&all, MemoryId::from_u128(1), 1, 100);
        assert_eq!(
            titles(&g),
            [
                ("m1".into(), Some(0)),
                ("m2".into(), Some(1)),
                ("m5".into(), Some(1))
            ]
        );
        assert_eq!(g.edges.len(), 2);
        assert!(!g.truncated);
        let g = around(&all, MemoryId::from_u128(1), 5, 100);
        assert_eq!(g.nodes.len(), 5, "everything linked, not m6");
        assert_eq!(
            g.nodes
                .iter()
                .find(|n| n.title == "m4")
                .and_then(|n| n.distance),
            Some(3)
        );
        let g = around(&all, MemoryId::from_u128(1), 5, 2);
        assert!(g.truncated);
        assert_eq!(g.nodes.len(), 2);
        assert_eq!(g.edges.len(), 1, "only the edge between the two kept");
        let g = around(&all, MemoryId::from_u128(1), 0, 100);
        assert_eq!(titles(&g), [("m1".into(), Some(0))]);
        let g = of_linked(&all[..5], false);
        assert_eq!(g.nodes.len(), 5, "every linked memory");
        assert_eq!(g.edges.len(), 4);
    }
}

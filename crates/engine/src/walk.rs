//! Walking snapshot trees: listing, finding a path, comparing snapshots.

use cairn_format::Id;
use cairn_format::tree::{Node, NodeType, Tree};
use cairn_repo::{BlobReader, Repo};

use crate::{Error, Result};

/// Splits `SNAP:PATH` into the snapshot spec and an optional path.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((s, p)) if !p.is_empty() => (s, Some(p)),
        Some((s, _)) => (s, None),
        None => (spec, None),
    }
}

/// A synthetic node standing for a snapshot's root directory.
pub fn root_node(root: Id) -> Node {
    Node {
        name: b"/".to_vec(),
        kind: Some(NodeType::Dir),
        mode: 0o755,
        subtree: Some(root),
        ..Node::default()
    }
}

/// Finds the node at an absolute `path` inside the tree `root`.
pub fn find(repo: &Repo, root: Id, path: &str) -> Result<Node> {
    let mut node = root_node(root);
    let mut reader = repo.reader();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let Some(sub) = node.subtree else {
            return Err(Error::Input(format!("{path}: {} is not a directory", comp)));
        };
        let tree = reader.load_tree(&sub)?;
        node = tree
            .nodes
            .into_iter()
            .find(|n| n.name == comp.as_bytes())
            .ok_or_else(|| Error::Input(format!("{path} is not in the snapshot")))?;
    }
    Ok(node)
}

/// Visits every node below `tree` depth first, names sorted, with its full
/// path (`prefix/name`).
pub fn walk(
    reader: &mut BlobReader<'_>,
    tree: &Id,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let t = reader.load_tree(tree)?;
    for n in &t.nodes {
        let path = join(prefix, &n.name);
        f(&path, n)?;
        if let Some(sub) = &n.subtree {
            walk(reader, sub, &path, f)?;
        }
    }
    Ok(())
}

/// `prefix/name`, without doubling the root slash.
pub fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// One difference between two snapshots.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Change {
    /// `+` added, `-` removed, `M` contents changed, `T` type changed, `U`
    /// metadata only.
    pub kind: char,
    /// Path.
    pub path: String,
    /// Size before (0 if added).
    pub old_size: u64,
    /// Size after (0 if removed).
    pub new_size: u64,
}

/// Compares two trees; unchanged subtrees (same ID) are skipped unread.
pub fn diff(repo: &Repo, a: &Id, b: &Id) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut r = repo.reader();
    diff_trees(&mut r, Some(a), Some(b), b"/", &mut out)?;
    Ok(out)
}

fn diff_trees(
    r: &mut BlobReader<'_>,
    a: Option<&Id>,
    b: Option<&Id>,
    prefix: &[u8],
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(id) => r.load_tree(id)?,
        None => Tree::default(),
    };
    let tb = match b {
        Some(id) => r.load_tree(id)?,
        None => Tree::default(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let x = na.expect("present");
                removed_or_added(r, '-', x, prefix, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = nb.expect("present");
                removed_or_added(r, '+', y, prefix, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("present"), nb.expect("present"));
                let path = join(prefix, &x.name);
                let ps = crate::display_path(&path);
                if x.node_type() != y.node_type() {
                    out.push(Change {
                        kind: 'T',
                        path: ps,
                        old_size: x.size,
                        new_size: y.size,
                    });
                } else if x.content != y.content || x.target != y.target {
                    out.push(Change {
                        kind: 'M',
                        path: ps,
                        old_size: x.size,
                        new_size: y.size,
                    });
                } else if x.node_type() != NodeType::Dir
                    && (x.mode != y.mode
                        || x.uid != y.uid
                        || x.gid != y.gid
                        || x.mtime != y.mtime
                        || x.xattrs != y.xattrs)
                {
                    out.push(Change {
                        kind: 'U',
                        path: ps,
                        old_size: x.size,
                        new_size: y.size,
                    });
                }
                if x.subtree.is_some() || y.subtree.is_some() {
                    diff_trees(r, x.subtree.as_ref(), y.subtree.as_ref(), &path, out)?;
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn removed_or_added(
    r: &mut BlobReader<'_>,
    kind: char,
    n: &Node,
    prefix: &[u8],
    out: &mut Vec<Change>,
) -> Result<()> {
    let path = join(prefix, &n.name);
    let size = n.size;
    out.push(Change {
        kind,
        path: crate::display_path(&path),
        old_size: if kind == '-' { size } else { 0 },
        new_size: if kind == '+' { size } else { 0 },
    });
    if let Some(sub) = &n.subtree {
        walk(r, sub, &path, &mut |p, c| {
            out.push(Change {
                kind,
                path: crate::display_path(p),
                old_size: if kind == '-' { c.size } else { 0 },
                new_size: if kind == '+' { c.size } else { 0 },
            });
            Ok(())
        })?;
    }
    Ok(())
}

use anyhow::Result;
use cairn_engine::walk::{find, join, split_spec, walk};
use cairn_format::tree::{Node, NodeType};

use crate::args::LsArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{size, time};

pub fn run(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let repo = ctx.open()?;
    repo.require_owner("list file names")?;
    let (spec, path) = split_spec(&a.snapshot);
    let snap = super::resolve(&repo, spec, a.group.as_deref())?;
    let start = match path {
        Some(p) => find(&repo, snap.envelope.root, p)?,
        None => cairn_engine::walk::root_node(snap.envelope.root),
    };
    let prefix = match path {
        Some(p) => format!("/{}", p.trim_matches('/')).into_bytes(),
        None => b"/".to_vec(),
    };
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut emit = |p: &[u8], n: &Node| {
        let ps = cairn_engine::display_path(p);
        if ctx.g.json {
            entries.push(serde_json::json!({
                "path": ps,
                "type": n.node_type().name(),
                "mode": n.mode,
                "uid": n.uid, "gid": n.gid,
                "user": n.user, "group": n.group,
                "size": n.size,
                "mtime_ns": n.mtime.sec as i128 * 1_000_000_000 + n.mtime.nsec as i128,
            }));
        } else if a.long {
            println!(
                "{} {:>8} {:>8} {:>10} {} {}{}",
                mode_string(n),
                n.user.clone().unwrap_or_else(|| n.uid.to_string()),
                n.group.clone().unwrap_or_else(|| n.gid.to_string()),
                size(n.size),
                time(n.mtime.sec * 1_000_000_000 + i64::from(n.mtime.nsec)),
                ps,
                n.target
                    .as_ref()
                    .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
                    .unwrap_or_default()
            );
        } else {
            println!("{ps}");
        }
    };
    match start.subtree {
        Some(sub) if start.node_type() == NodeType::Dir => {
            let mut reader = repo.reader();
            walk(&mut reader, &sub, &prefix, &mut |p, n| {
                emit(p, n);
                Ok(())
            })?;
        }
        _ => emit(&join(b"/", &prefix[1..]), &start),
    }
    if ctx.g.json {
        crate::output::json(&entries)?;
    }
    Ok(exit::OK)
}

fn mode_string(n: &Node) -> String {
    let t = match n.node_type() {
        NodeType::Dir => 'd',
        NodeType::Symlink => 'l',
        NodeType::Fifo => 'p',
        NodeType::CharDev => 'c',
        NodeType::BlockDev => 'b',
        NodeType::Socket => 's',
        NodeType::File => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if n.mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

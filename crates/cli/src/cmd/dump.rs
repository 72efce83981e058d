use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use cairn_engine::dump::{dump_file, dump_tar};
use cairn_engine::walk::{find, root_node, split_spec};
use cairn_format::tree::NodeType;

use crate::args::DumpArgs;
use crate::ctx::Ctx;
use crate::exit;

pub fn run(ctx: &Ctx, a: DumpArgs) -> Result<i32> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "cairn dump writes bytes, not text: redirect it (`cairn dump SNAP:PATH > FILE`, `| tar -x`) or give -o FILE"
        );
    }
    let repo = ctx.open()?;
    repo.require_owner("dump files")?;
    let (spec, path) = split_spec(&a.snapshot);
    let snap = super::resolve(&repo, spec, a.group.as_deref())?;
    let (node, name) = match path {
        Some(p) if !p.trim_matches('/').is_empty() => {
            let n = find(&repo, snap.envelope.root, p)?;
            let name = n.name.clone();
            (n, name)
        }
        _ => (root_node(snap.envelope.root), Vec::new()),
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        )),
    };
    let s = match node.node_type() {
        NodeType::File if !a.tar => {
            dump_file(&repo, &node, path.unwrap_or("").as_bytes(), &mut out)?
        }
        NodeType::Socket => bail!("{} is a socket, which has no contents to dump", a.snapshot),
        _ => dump_tar(&repo, &node, &name, &mut out)?,
    };
    out.flush().context("write the output")?;
    if s.skipped > 0 && !ctx.g.quiet {
        eprintln!(
            "cairn: {} sockets left out (tar cannot hold them)",
            s.skipped
        );
    }
    Ok(exit::OK)
}

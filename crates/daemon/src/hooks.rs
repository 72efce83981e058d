//! Commands around a run (`before`, `after`, `on_failure`): run without
//! a shell, their output kept for the log, a failing `before` stopping
//! the run.

use std::process::Command;

/// The last bytes of a hook's output worth putting in a message.
const TAIL: usize = 2048;

/// Runs the hooks of one kind in order; the first failure stops them and
/// is returned with the command's output. `env` is passed to each.
pub fn run(which: &str, list: &[Vec<String>], env: &[(&str, String)]) -> Result<(), String> {
    for argv in list {
        let Some((prog, args)) = argv.split_first() else {
            continue;
        };
        let shown = argv.join(" ");
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CAIRN_HOOK", which);
        let (status, out, err) = crate::tail::run(cmd, TAIL)
            .map_err(|e| format!("{which} hook `{shown}` could not start: {e}"))?;
        if !status.success() {
            let text = format!("{err}\n{out}");
            let text = text.trim();
            let tail = &text[text.floor_char_boundary(text.len().saturating_sub(TAIL))..];
            return Err(format!(
                "{which} hook `{shown}` failed ({status}){}{}",
                if tail.is_empty() { "" } else { ": " },
                tail
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failing_hook_says_what_it_printed() {
        let ok = vec![vec!["true".to_string()]];
        super::run("before", &ok, &[]).unwrap();
        let bad = vec![vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo \"no snapshot for $CAIRN_JOB\" >&2; exit 3".to_string(),
        ]];
        let e = super::run("before", &bad, &[("CAIRN_JOB", "home".into())]).unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("no snapshot for home"),
            "{e}"
        );
        let missing = vec![vec!["/no/such/program".to_string()]];
        assert!(
            super::run("after", &missing, &[])
                .unwrap_err()
                .contains("could not start")
        );
    }
}

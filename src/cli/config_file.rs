//! `--config FILE` (or `CALLSCOPE_CONFIG`): a TOML file whose keys are long flag names,
//! e.g. `http-addr = "127.0.0.1:8080"`. Its values apply to flags that neither the command
//! line nor their environment variable set.

use std::collections::BTreeMap;

use anyhow::Context;

/// The command line with values from `--config FILE` (or `CALLSCOPE_CONFIG`) appended for
/// every flag of the chosen subcommand of `command` that neither the command line nor its
/// environment variable sets. Keys are long flag names; keys that the subcommand does not
/// have are skipped, so one file can serve every subcommand.
pub fn args_with_config_file(command: &clap::Command) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let strings: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let path = strings
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| strings.get(i + 1).cloned())
        .or_else(|| strings.iter().find_map(|a| a.strip_prefix("--config=").map(str::to_string)))
        .or_else(|| std::env::var("CALLSCOPE_CONFIG").ok());
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {path}"))?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).with_context(|| format!("config file {path} is not valid TOML"))?;
    let Some(sub) = strings.iter().skip(1).find_map(|a| command.find_subcommand(a)) else { return Ok(args) };
    // Nested subcommands (bench ingest) keep their own flags.
    let sub = strings.iter().skip(1).find_map(|a| sub.find_subcommand(a)).unwrap_or(sub);
    for (key, value) in table {
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            continue;
        };
        let flag = format!("--{key}");
        if strings.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
            continue;
        }
        if arg.get_env().is_some_and(|env| std::env::var_os(env).is_some()) {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.into_iter().map(toml_text).collect(),
            // A switch is given or not; a flag that takes a value gets `true`/`false`.
            toml::Value::Boolean(b) if arg.get_action().takes_values() => vec![b.to_string()],
            toml::Value::Boolean(b) => {
                if b {
                    args.push(flag.into());
                }
                continue;
            }
            other => vec![toml_text(other)],
        };
        for v in values {
            args.push(flag.clone().into());
            args.push(v.into());
        }
    }
    Ok(args)
}

fn toml_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(s) => s,
        other => other.to_string(),
    }
}

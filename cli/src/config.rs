//! One configuration file for `serve`, `agent` and `relay` (`--config FILE`; for `serve` also
//! `DATA_DIR/switchboard.toml` when it exists), a TOML table per command:
//!
//! ```toml
//! [serve]
//! listen = "0.0.0.0:8768"
//! ping-interval = 30
//!
//! [agent]
//! manager = "hub.example:8768"
//! tail-dir = ["/var/log/app"]
//! ```
//!
//! Keys are the commands' long flags (`ping-interval`, or `ping_interval`); a value is what the
//! flag takes (strings, numbers, `true` for a switch, an array for a repeatable flag). Flags
//! given on the command line override the file. An unknown key, a key outside a command's
//! table or a value of the wrong kind is an error naming the key and its line. The file's
//! values become flags before clap parses the command line, so they are checked exactly as
//! flags are.
//!
//! `switchboard config check FILE` validates every table; `switchboard config show [--config
//! FILE] COMMAND` prints the effective configuration with where each value comes from.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap::parser::ValueSource;
use toml_edit::{Document, Item, Value};

/// The commands a file configures.
pub const COMMANDS: &[&str] = &["serve", "agent", "relay"];

/// The file's name in a data dir.
pub const FILE_NAME: &str = "switchboard.toml";

/// Arguments of `config`.
#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (every command's table).
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the effective configuration of a command and where each value comes from.
    Show {
        /// The file (default for serve: DATA_DIR/switchboard.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data dir (for serve's default file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// serve, agent or relay.
        #[arg(default_value = "serve")]
        command: String,
    },
}

/// A value of the file, as flags, with where it was.
struct Setting {
    key: String,
    line: usize,
    args: Vec<String>,
}

fn line_of(text: &str, offset: Option<usize>) -> usize {
    offset.map_or(0, |o| text[..o.min(text.len())].matches('\n').count() + 1)
}

/// The long flags of `command` (besides help and version), and which of them are switches.
fn flags(command: &str) -> Vec<(String, bool)> {
    let cli = crate::Cli::command();
    let Some(sub) = cli.find_subcommand(command) else {
        return vec![];
    };
    sub.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if long == "help" || long == "version" || long == "config" {
                return None;
            }
            let switch = matches!(
                a.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
            Some((long.to_string(), switch))
        })
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.value().clone(),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(f) => f.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        _ => return None,
    })
}

/// The settings of `command`'s table in `text` (`file` names it in errors).
fn settings(text: &str, file: &Path, command: &str) -> Result<Vec<Setting>, String> {
    let doc = Document::parse(text).map_err(|e| format!("{}: {e}", file.display()))?;
    let root = doc.as_table();
    for (k, item) in root.iter() {
        let line = line_of(text, root.key(k).and_then(|k| k.span()).map(|s| s.start));
        if !item.is_table() || !COMMANDS.contains(&k) {
            return Err(format!(
                "{}:{line}: {k:?} is not a command's table (expected [serve], [agent] or [relay])",
                file.display()
            ));
        }
    }
    let Some(table) = root.get(command).and_then(Item::as_table) else {
        return Ok(vec![]);
    };
    let known = flags(command);
    let mut out = Vec::new();
    for (k, item) in table.iter() {
        let line = line_of(text, table.key(k).and_then(|k| k.span()).map(|s| s.start));
        let key = k.replace('_', "-");
        let Some((_, switch)) = known.iter().find(|(f, _)| *f == key) else {
            let names: Vec<&str> = known.iter().map(|(f, _)| f.as_str()).collect();
            return Err(format!(
                "{}:{line}: unknown key {k:?} in [{command}] (known: {})",
                file.display(),
                names.join(", ")
            ));
        };
        let bad = |what: &str| format!("{}:{line}: {k:?} in [{command}]: {what}", file.display());
        let values: Vec<String> = match item {
            Item::Value(Value::Array(a)) => a
                .iter()
                .map(|v| scalar(v).ok_or_else(|| bad("an array of plain values expected")))
                .collect::<Result<_, _>>()?,
            Item::Value(v) => vec![scalar(v).ok_or_else(|| bad("a plain value expected"))?],
            _ => return Err(bad("a value expected, not a table")),
        };
        let mut args = Vec::new();
        for v in values {
            if *switch {
                match v.as_str() {
                    "true" => args.push(format!("--{key}")),
                    "false" => {}
                    _ => return Err(bad("true or false expected")),
                }
            } else {
                args.push(format!("--{key}"));
                args.push(v);
            }
        }
        out.push(Setting { key, line, args });
    }
    Ok(out)
}

/// Whether `argv` (after the command) gives `--key` itself.
fn given(argv: &[OsString], key: &str) -> bool {
    let flag = format!("--{key}");
    argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    })
}

/// The default file of a command, if any: `DATA_DIR/switchboard.toml` for serve.
fn default_file(command: &str, argv: &[OsString]) -> Option<PathBuf> {
    if command != "serve" {
        return None;
    }
    let mut dir = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--data-dir" {
            dir = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--data-dir=") {
            dir = Some(PathBuf::from(v));
        }
    }
    let dir = dir
        .or_else(|| std::env::var_os("SWITCHBOARD_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("switchboard-data"));
    let f = dir.join(FILE_NAME);
    f.exists().then_some(f)
}

/// The command line with the configuration file's values added as flags (those not given on
/// the command line), for `serve`, `agent` and `relay`; other commands pass through. The
/// file is `--config FILE` (removed from the line) or the command's default file.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // The command is the first word that is not a global flag (`--log` and `--log-format`
    // take a value).
    let mut pos = None;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy();
        if a == "--log" || a == "--log-format" {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            pos = COMMANDS.contains(&a.as_ref()).then_some(i);
            break;
        }
        i += 1;
    }
    let Some(pos) = pos else {
        return Ok(argv);
    };
    let command = argv[pos].to_string_lossy().to_string();
    let mut rest: Vec<OsString> = argv[pos + 1..].to_vec();
    let mut file = None;
    if let Some(i) = rest.iter().position(|a| a == "--config") {
        let Some(f) = rest.get(i + 1).cloned() else {
            return Err("--config needs a file".into());
        };
        file = Some(PathBuf::from(f));
        rest.drain(i..=i + 1);
    } else if let Some(i) = rest
        .iter()
        .position(|a| a.to_str().is_some_and(|a| a.starts_with("--config=")))
    {
        file = rest[i]
            .to_str()
            .and_then(|a| a.strip_prefix("--config="))
            .map(PathBuf::from);
        rest.remove(i);
    }
    let file = file.or_else(|| default_file(&command, &rest));
    let mut out: Vec<OsString> = argv[..=pos].to_vec();
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        for s in settings(&text, &f, &command)? {
            if !given(&rest, &s.key) {
                out.extend(s.args.into_iter().map(OsString::from));
            }
        }
    }
    out.extend(rest);
    Ok(out)
}

/// Runs `config`.
pub fn run(a: ConfigArgs) -> io::Result<ExitCode> {
    match a.command {
        ConfigCommand::Check { file } => check(&file),
        ConfigCommand::Show {
            config,
            data_dir,
            command,
        } => show(config, data_dir, &command),
    }
}

/// Parses `command` with `args` as clap would, ignoring only missing required flags.
fn try_parse(command: &str, args: &[String]) -> Result<clap::ArgMatches, String> {
    let cli = crate::Cli::command();
    let mut line = vec!["switchboard".to_string(), command.to_string()];
    line.extend(args.iter().cloned());
    match cli.try_get_matches_from(&line) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Err(String::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn check(file: &Path) -> io::Result<ExitCode> {
    let text = std::fs::read_to_string(file)?;
    let mut ok = true;
    for command in COMMANDS {
        match settings(&text, file, command) {
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(settings) => {
                for s in &settings {
                    if let Err(e) = try_parse(command, &s.args)
                        && !e.is_empty()
                    {
                        eprintln!(
                            "{}:{}: {:?} in [{command}]: {}",
                            file.display(),
                            s.line,
                            s.key,
                            e.lines().next().unwrap_or("").trim_start_matches("error: ")
                        );
                        ok = false;
                    }
                }
                if !settings.is_empty() {
                    println!("[{command}]: {} setting(s)", settings.len());
                }
            }
        }
    }
    if ok {
        println!("{}: ok", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

fn show(config: Option<PathBuf>, data_dir: Option<PathBuf>, command: &str) -> io::Result<ExitCode> {
    if !COMMANDS.contains(&command) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("config show: {command:?} is not serve, agent or relay"),
        ));
    }
    let mut probe: Vec<OsString> = vec![];
    if let Some(d) = &data_dir {
        probe.push("--data-dir".into());
        probe.push(d.into());
    }
    let file = config.or_else(|| default_file(command, &probe));
    let mut from_file: Vec<(String, usize, Vec<String>)> = vec![];
    if let Some(f) = &file {
        let text = std::fs::read_to_string(f)?;
        for s in settings(&text, f, command).map_err(io::Error::other)? {
            from_file.push((s.key, s.line, s.args));
        }
        println!("# {command}, with {}", f.display());
    } else {
        println!("# {command}, no configuration file");
    }
    let args: Vec<String> = from_file.iter().flat_map(|(_, _, a)| a.clone()).collect();
    let matches = match try_parse(command, &args) {
        Ok(m) => m,
        Err(e) if e.is_empty() => {
            // Required flags missing (an agent's --manager...): show what is known.
            println!("# (some required flags are not set)");
            for (k, line, a) in &from_file {
                let values: Vec<&String> = a.iter().filter(|v| !v.starts_with("--")).collect();
                let shown = match values.as_slice() {
                    [] => "true".to_string(),
                    [one] => format!("{one:?}"),
                    many => format!("{many:?}"),
                };
                println!("{k} = {shown}  # file, line {line}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(ExitCode::FAILURE);
    };
    let cli = crate::Cli::command();
    let Some(cmd) = cli.find_subcommand(command) else {
        return Ok(ExitCode::FAILURE);
    };
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        let id = a.get_id().as_str();
        let values: Vec<String> = sub
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        let source = match sub.value_source(id) {
            Some(ValueSource::DefaultValue) => "default".to_string(),
            Some(ValueSource::EnvVariable) => "environment".to_string(),
            Some(ValueSource::CommandLine) => from_file
                .iter()
                .find(|(k, _, _)| k == long)
                .map(|(_, line, _)| format!("file, line {line}"))
                .unwrap_or_else(|| "flag".into()),
            _ => "unset".to_string(),
        };
        let shown = match values.len() {
            0 if sub.try_get_one::<bool>(id).ok().flatten() == Some(&true) => "true".to_string(),
            0 => String::new(),
            1 => format!("{:?}", values[0]),
            _ => format!("{values:?}"),
        };
        if shown.is_empty() {
            println!("# {long} (unset)");
        } else {
            println!("{long} = {shown}  # {source}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A commented example of `serve`'s table: every flag with its help and default.
pub fn example(command: &str) -> String {
    let cli = crate::Cli::command();
    let mut out = format!(
        "# Switchboard configuration: copy to {FILE_NAME} (in the data dir, or pass --config).\n\
         # Flags given on the command line override these. `switchboard config check FILE`.\n\n[{command}]\n"
    );
    if let Some(cmd) = cli.find_subcommand(command) {
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if matches!(long, "help" | "version" | "config" | "data-dir") {
                continue;
            }
            if let Some(help) = a.get_help() {
                for l in help.to_string().lines() {
                    out.push_str(&format!("# {l}\n"));
                }
            }
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().to_string())
                .collect();
            let value = match default.first() {
                Some(d) if d.parse::<f64>().is_ok() || d == "true" || d == "false" => d.clone(),
                Some(d) => format!("{d:?}"),
                None => "\"\"".into(),
            };
            out.push_str(&format!("# {long} = {value}\n\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_values_become_flags_after_the_command_and_flags_win() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[serve]\nlisten = \"a:1\"\nping-interval = 5\n").expect("write");
        let path = f.to_str().expect("utf-8");
        let got = expand(os(&[
            "switchboard",
            "--log",
            "debug",
            "serve",
            "--config",
            path,
            "--listen",
            "b:2",
        ]))
        .expect("expand");
        assert_eq!(
            got,
            os(&[
                "switchboard",
                "--log",
                "debug",
                "serve",
                "--ping-interval",
                "5",
                "--listen",
                "b:2"
            ])
        );
        // Another command's words are left alone.
        let admin = os(&[
            "switchboard",
            "admin",
            "run",
            "--agent",
            "serve",
            "--config",
            path,
        ]);
        assert_eq!(expand(admin.clone()).expect("expand"), admin);
        // A missing file is an error naming it.
        let e = expand(os(&[
            "switchboard",
            "serve",
            "--config",
            "/nonexistent.toml",
        ]))
        .expect_err("no file");
        assert!(e.contains("/nonexistent.toml"), "{e}");
    }
}

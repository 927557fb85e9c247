//! The README is executable, and it is the program's reference: every `console` block runs, in
//! order, in a copy of the repository's examples, and prints what the README says it prints;
//! every `greentic-host` command of every `sh` and `console` block parses with the program's own
//! command line; the command table lists every verb and flag the program has and nothing else;
//! the bundle table every key of `greentic.toml`'s schema and nothing else; the error table every
//! code the program emits, with its status and whether it is retryable, and nothing else; and
//! every `toml` and `json` block is a valid bundle fragment, provider manifest or conformance
//! profile.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use greentic_host::cli::Cli;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// A fenced code block: its language, its lines, and the README line its first line is on.
struct Block {
    lang: String,
    lines: Vec<String>,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    lines: Vec::new(),
                    line: i + 2,
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => block.lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    out
}

/// A line's words as a POSIX shell splits them (quotes removed), up to a comment or an
/// operator (`|`, `>`, `<`, `;`, `&`): what a program run by that line gets as arguments.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            '|' | '>' | '<' | ';' | '&' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The commands of a block with the README line of each: a `console` block's `$ ` lines, an
/// `sh` block's lines with their `\` continuations joined.
fn commands(block: &Block) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in block.lines.iter().enumerate() {
        let text = match block.lang.as_str() {
            "console" => match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
            _ => line.as_str(),
        };
        let (start, mut joined) = pending.take().unwrap_or((block.line + i, String::new()));
        match text.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(text.trim());
                if !joined.is_empty() && !joined.starts_with('#') {
                    out.push((start, joined));
                }
            }
        }
    }
    out
}

#[test]
fn every_greentic_host_command_in_the_readme_parses() {
    let text = readme();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for block in blocks(&text)
        .iter()
        .filter(|b| matches!(b.lang.as_str(), "sh" | "console"))
    {
        for (line, command) in commands(block) {
            let words = shell_words(&command);
            if words.first().map(String::as_str) != Some("greentic-host") {
                continue;
            }
            checked += 1;
            if let Err(e) = Cli::command().try_get_matches_from(&words) {
                wrong.push(format!("README.md:{line}: `{command}`: {}", e.render()));
            }
        }
    }
    assert!(
        checked >= 30,
        "only {checked} greentic-host commands found in the README"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The cells of a Markdown table row (`\|` is a `|` inside a cell).
fn cells(row: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cell).trim().to_string()),
            c => cell.push(c),
        }
    }
    out
}

/// The `backticked` spans of a Markdown cell.
fn spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every leaf command of the program (`run`, `fleet status`, …) with its flags (`--long` and
/// `-s`; `--help` left out).
fn program_commands() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(command: &clap::Command, path: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
        let subcommands: Vec<&clap::Command> = command
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subcommands.is_empty() {
            let flags = command
                .get_arguments()
                .filter(|a| {
                    !a.is_positional() && !matches!(a.get_id().as_str(), "help" | "version")
                })
                .flat_map(|a| {
                    a.get_long()
                        .map(|l| format!("--{l}"))
                        .into_iter()
                        .chain(a.get_short().map(|s| format!("-{s}")))
                })
                .collect();
            out.insert(path.to_string(), flags);
        }
        for sub in subcommands {
            let path = format!("{path} {}", sub.get_name()).trim().to_string();
            walk(sub, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Cli::command(), "", &mut out);
    out
}

#[test]
fn the_command_table_lists_every_command_and_flag_of_the_program_and_nothing_else() {
    let program = program_commands();
    let text = readme();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (i, row) in text.lines().enumerate() {
        if !row.starts_with("| `greentic-host ") {
            continue;
        }
        let cells = cells(row);
        let mut verbs = Vec::new();
        for (n, span) in spans(&cells[0]).into_iter().enumerate() {
            let words = span.strip_prefix("greentic-host ").unwrap_or(&span);
            let path: Vec<&str> = words
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .collect();
            // The first span names the command; later ones in the same cell are more commands
            // (`pull`, `sign`) or, after "or", another form of its argument.
            if n == 0 || !path.is_empty() && program.contains_key(&path.join(" ")) {
                verbs.push(path.join(" "));
            }
        }
        let flags: BTreeSet<String> = spans(cells.get(1).map_or("", String::as_str))
            .into_iter()
            .filter(|s| s.starts_with('-'))
            .filter_map(|s| s.split_whitespace().next().map(str::to_string))
            .collect();
        for verb in verbs {
            let Some(has) = program.get(&verb) else {
                wrong.push(format!(
                    "README.md:{}: `greentic-host {verb}` is not a command of the program",
                    i + 1
                ));
                continue;
            };
            for flag in flags.difference(has) {
                wrong.push(format!(
                    "README.md:{}: `greentic-host {verb}` has no flag `{flag}`",
                    i + 1
                ));
            }
            documented.entry(verb).or_default().extend(flags.clone());
        }
    }
    for (verb, flags) in &program {
        match documented.get(verb) {
            None => wrong.push(format!(
                "`greentic-host {verb}` has no row in the README's command table"
            )),
            Some(listed) => {
                for flag in flags.difference(listed) {
                    wrong.push(format!(
                        "`greentic-host {verb} {flag}` is missing from the README's command table"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `node` with its `$ref` followed.
fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/")
            .map(|path| {
                path.split('/')
                    .fold(root, |n, part| n.get(part).unwrap_or(&Value::Null))
            })
            .map_or(node, |target| resolve(target, root)),
        None => node,
    }
}

/// The schemas `node` stands for: itself and, through `anyOf`/`oneOf`/`allOf`, its parts.
fn alternatives<'a>(node: &'a Value, root: &'a Value) -> Vec<&'a Value> {
    let node = resolve(node, root);
    let mut out = vec![node];
    for key in ["anyOf", "oneOf", "allOf"] {
        for part in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(alternatives(part, root));
        }
    }
    out
}

/// Every property name and string value (enums, consts) in the schema under `node`.
fn keys_and_values(
    node: &Value,
    root: &Value,
    keys: &mut BTreeSet<String>,
    values: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 24 {
        return;
    }
    for node in alternatives(node, root) {
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (key, child) in properties {
                keys.insert(key.clone());
                keys_and_values(child, root, keys, values, depth + 1);
            }
        }
        for key in ["additionalProperties", "items"] {
            if let Some(child) = node.get(key).filter(|c| c.is_object()) {
                keys_and_values(child, root, keys, values, depth + 1);
            }
        }
        for value in node
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            values.extend(value.as_str().map(str::to_string));
        }
        values.extend(
            node.get("const")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
    }
}

#[test]
fn the_bundle_table_lists_every_key_of_greentic_toml_and_nothing_else() {
    let schema = greentic_host::bundle::schema();
    let sections = schema["properties"].as_object().unwrap();
    let text = readme();
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, row) in text.lines().enumerate() {
        let Some(first) = row.strip_prefix("| `[") else {
            continue;
        };
        let name = first
            .trim_start_matches('[')
            .split(['.', ']'])
            .next()
            .unwrap_or_default()
            .to_string();
        let Some(section) = sections.get(&name) else {
            wrong.push(format!(
                "README.md:{}: `[{name}]` is not a section of greentic.toml",
                i + 1
            ));
            continue;
        };
        seen.insert(name.clone());
        let (mut keys, mut values) = (BTreeSet::new(), BTreeSet::new());
        keys_and_values(section, &schema, &mut keys, &mut values, 0);
        let cell = cells(row).get(1).cloned().unwrap_or_default();
        let mentioned: BTreeSet<String> = spans(&cell)
            .iter()
            .flat_map(|s| {
                s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        for key in keys.difference(&mentioned) {
            wrong.push(format!(
                "README.md:{}: `[{name}]`'s key `{key}` is missing from its row",
                i + 1
            ));
        }
        // A span that sets a key (`key = …`), or names one with an underscore in it
        // (`max_concurrent`), names one the program has; other words in backticks may be
        // claims, commands or paths.
        for span in spans(&cell) {
            let (head, sets) = match span.split_once(" =") {
                Some((head, _)) => (head, true),
                None => (span.as_str(), false),
            };
            let is_name = head.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && head
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && (sets || head.contains('_'));
            if is_name && !keys.contains(head) && !values.contains(head) {
                wrong.push(format!(
                    "README.md:{}: `[{name}]` has no key or value `{head}`",
                    i + 1
                ));
            }
        }
    }
    for section in sections.keys() {
        if !seen.contains(section) {
            wrong.push(format!(
                "`[{section}]` has no row in the README's bundle table"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The body of `fn NAME` in `source` (up to its closing brace at four spaces' indent).
fn fn_body<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("pub fn {name}(&self)"))
        .unwrap_or_else(|| panic!("fn {name} not found"));
    let end = source[start..]
        .find("\n    }\n")
        .map_or(source.len(), |e| start + e);
    &source[start..end]
}

/// `CallError::X` / `ProviderFailure::X` names in `text`.
fn variants(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["CallError::", "ProviderFailure::"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let after = &rest[i + prefix.len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            out.push(format!("{prefix}{name}"));
            rest = after;
        }
    }
    out
}

/// A match's arms: each variant named in an arm's pattern, with the literal the arm gives
/// (arms whose value is not a literal, a nested `match`, are left out).
fn arms(body: &str) -> Vec<(String, String)> {
    let pieces: Vec<&str> = body.split("=>").collect();
    let mut out = Vec::new();
    for i in 1..pieces.len() {
        let previous = pieces[i - 1];
        let pattern = match previous.find([',', '{']) {
            Some(at) => &previous[at..],
            None => previous,
        };
        let value = pieces[i].trim_start();
        let literal = if let Some(rest) = value.strip_prefix('"') {
            rest.split('"').next().map(str::to_string)
        } else {
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty()).then_some(digits)
        };
        if let Some(literal) = literal {
            for variant in variants(pattern) {
                out.push((variant, literal.clone()));
            }
        }
    }
    out
}

/// Every error code the program emits, with its status and whether it is retryable.
fn program_codes() -> BTreeMap<String, BTreeSet<(u16, bool)>> {
    let mut out: BTreeMap<String, BTreeSet<(u16, bool)>> = BTreeMap::new();
    let errors = std::fs::read_to_string(repo().join("host/engine/src/errors.rs")).unwrap();
    let codes: BTreeMap<String, String> = arms(fn_body(&errors, "code")).into_iter().collect();
    let statuses: BTreeMap<String, String> = arms(fn_body(&errors, "status")).into_iter().collect();
    let retryable: BTreeSet<String> = variants(fn_body(&errors, "retryable"))
        .into_iter()
        .collect();
    assert!(codes.len() >= 20, "the code arms were not read: {codes:?}");
    for (variant, code) in &codes {
        let status = statuses
            .get(variant)
            .unwrap_or_else(|| panic!("{variant} has a code but no status arm"))
            .parse()
            .unwrap();
        out.entry(code.clone())
            .or_default()
            .insert((status, retryable.contains(variant)));
    }
    // The HTTP layer's own answers: `error(STATUS, "code", …)`.
    for file in std::fs::read_dir(repo().join("host/server/src")).unwrap() {
        let source = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let mut rest = source.as_str();
        while let Some(i) = rest.find("error(") {
            rest = &rest[i + "error(".len()..];
            let args = rest.trim_start();
            let status: String = args.chars().take_while(char::is_ascii_digit).collect();
            let Some(after) = args[status.len()..].trim_start().strip_prefix(',') else {
                continue;
            };
            let Some(code) = after.trim_start().strip_prefix('"') else {
                continue;
            };
            let code = code.split('"').next().unwrap_or_default();
            let status: u16 = status.parse().unwrap();
            out.entry(code.to_string())
                .or_default()
                .insert((status, greentic_host::server::requests::retryable(status)));
        }
    }
    // Authentication's refusals: `AuthError::Refused { status: N, code: "code", … }`.
    let auth = std::fs::read_to_string(repo().join("host/auth/src/lib.rs")).unwrap();
    let mut found = 0;
    for refusal in auth.split("AuthError::Refused {").skip(1) {
        let field = |name: &str| {
            refusal.split_once(&format!("{name}: ")).map(|(_, rest)| {
                rest.trim_start_matches('"')
                    .split(['"', ','])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        };
        let (Some(status), Some(code)) = (field("status"), field("code")) else {
            continue;
        };
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        found += 1;
        out.entry(code)
            .or_default()
            .insert((status, greentic_host::server::requests::retryable(status)));
    }
    assert!(found >= 3, "authentication's refusals were not read");
    out
}

#[test]
fn the_error_table_lists_every_code_the_program_emits_and_nothing_else() {
    let program = program_codes();
    assert!(
        program.contains_key("too-large") && program.contains_key("guest-trap"),
        "{program:?}"
    );
    let text = readme();
    let mut wrong = Vec::new();
    let mut documented = BTreeSet::new();
    for (i, row) in text.lines().enumerate() {
        let cells = cells(row);
        let (Some(code), Some(status), Some(retryable)) =
            (cells.first(), cells.get(1), cells.get(2))
        else {
            continue;
        };
        let (Some(code), Ok(status)) = (
            code.strip_prefix('`').and_then(|c| c.strip_suffix('`')),
            status.parse::<u16>(),
        ) else {
            continue;
        };
        documented.insert(code.to_string());
        let retryable = retryable == "yes";
        match program.get(code) {
            None => wrong.push(format!(
                "README.md:{}: the program never answers `{code}`",
                i + 1
            )),
            Some(emitted) => {
                for (s, r) in emitted {
                    if (*s, *r) != (status, retryable) {
                        wrong.push(format!(
                            "README.md:{}: `{code}` is {status} (retryable: {retryable}) here, but the program answers it {s} (retryable: {r})",
                            i + 1
                        ));
                    }
                }
            }
        }
    }
    for code in program.keys() {
        if !documented.contains(code) {
            wrong.push(format!(
                "`{code}` is emitted but missing from the README's error table"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Checks the keys of `table` against the schema `node`: every key must be one the bundle
/// format has at that place.
fn check_toml(
    table: &toml::Table,
    node: &Value,
    root: &Value,
    path: &str,
    wrong: &mut Vec<String>,
) {
    // A free-form table (a schedule's `payload`) takes any keys.
    let shapes = alternatives(node, root);
    if !shapes
        .iter()
        .any(|n| n.get("properties").is_some() || n.get("additionalProperties").is_some())
    {
        return;
    }
    for (key, value) in table {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let child = alternatives(node, root).into_iter().find_map(|n| {
            n.get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| n.get("additionalProperties").filter(|a| a.is_object()))
        });
        let Some(child) = child else {
            wrong.push(format!("`{here}` is not a key of greentic.toml"));
            continue;
        };
        match value {
            toml::Value::Table(inner) => check_toml(inner, child, root, &here, wrong),
            toml::Value::Array(items) => {
                let item = alternatives(child, root)
                    .into_iter()
                    .find_map(|n| n.get("items"));
                for inner in items.iter().filter_map(toml::Value::as_table) {
                    match item {
                        Some(item) => check_toml(inner, item, root, &here, wrong),
                        None => wrong.push(format!("`{here}` is not a list of tables")),
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_toml_and_json_block_of_the_readme_is_valid() {
    let schema = greentic_host::bundle::schema();
    let text = readme();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for block in blocks(&text) {
        let body = block.lines.join("\n");
        match block.lang.as_str() {
            "toml" => {
                checked += 1;
                match body.parse::<toml::Table>() {
                    Ok(table) => {
                        let mut problems = Vec::new();
                        check_toml(&table, &schema, &schema, "", &mut problems);
                        wrong.extend(
                            problems
                                .into_iter()
                                .map(|p| format!("README.md:{}: {p}", block.line)),
                        );
                    }
                    Err(e) => wrong.push(format!("README.md:{}: not TOML: {e}", block.line)),
                }
            }
            "json" => {
                checked += 1;
                let is_manifest = serde_json::from_str::<Value>(&body)
                    .map(|v| v.get("compat").is_some())
                    .unwrap_or(false);
                let result = if is_manifest {
                    greentic_manifest::ProviderManifest::from_json("README.md", &body)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    serde_json::from_str::<greentic_conformance::profile::Profile>(&body)
                        .map(drop)
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = result {
                    wrong.push(format!("README.md:{}: {e}", block.line));
                }
            }
            _ => {}
        }
    }
    assert!(checked >= 5, "only {checked} toml/json blocks found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Whether `actual` matches `expected`, a line where `[..]` stands for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `actual` lines match `expected` ones, where a `...` line stands for any lines.
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|k| lines_match(rest, &actual[k..])),
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && lines_match(rest, more)),
    }
}

/// A command started with `&`: the process and what it printed so far.
struct Job {
    child: Child,
    output: Arc<Mutex<String>>,
}

/// A shell session over a copy of the examples: the README's ports mapped to free ones, the
/// environment the README's `export`s build, and the jobs started with `&`.
struct Session {
    root: PathBuf,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    ports: Vec<(u16, u16)>,
    jobs: Vec<Option<Job>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for job in self.jobs.iter_mut().flatten() {
            let _ = job.child.kill();
            let _ = job.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Session {
    fn new(root: &Path) -> Session {
        // The examples the README's commands use, copied; the sources they read, linked.
        for example in ["quickstart", "demo"] {
            copy_dir(
                &repo().join("examples").join(example),
                &root.join("examples").join(example),
            );
        }
        std::os::unix::fs::symlink(repo().join("components"), root.join("components")).unwrap();
        // The README's fixed ports, mapped to free ones in its commands and in the bundle.
        let ports: Vec<(u16, u16)> = [8080, 9464, 8081].map(|p| (p, free_port())).to_vec();
        let bundle = root.join("examples/quickstart/greentic.toml");
        let mut text = std::fs::read_to_string(&bundle).unwrap();
        for (from, to) in &ports {
            text = text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
        }
        std::fs::write(&bundle, text).unwrap();
        let bin = common::host_bin();
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.insert(
            "PATH".into(),
            format!(
                "{}:{}",
                bin.parent().unwrap().display(),
                env.get("PATH").cloned().unwrap_or_default()
            ),
        );
        // `$CARGO_TARGET_DIR/greentic-components` is where the components were built.
        env.insert(
            "CARGO_TARGET_DIR".into(),
            common::components_dir()
                .parent()
                .unwrap()
                .display()
                .to_string(),
        );
        env.insert(
            "GREENTIC_CACHE_KEY_FILE".into(),
            common::cache_key_file().display().to_string(),
        );
        env.remove("GREENTIC_LOG_FORMAT");
        env.remove("COSIGN_PASSWORD");
        Session {
            root: root.to_path_buf(),
            cwd: root.to_path_buf(),
            env,
            ports,
            jobs: Vec::new(),
        }
    }

    /// `command` with the README's ports replaced by this session's.
    fn mapped(&self, command: &str) -> String {
        let mut out = command.to_string();
        for (from, to) in &self.ports {
            out = out
                .replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"))
                .replace(&format!(" {from} "), &format!(" {to} "));
        }
        out
    }

    fn sh(&self, command: &str) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(command)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(&self.env);
        sh
    }

    /// Runs one command of a `console` block; what it printed (stdout, then stderr) and its
    /// exit status, or `None` for what the session does itself (`cd`, `export`, `&`, `kill`).
    fn run(&mut self, command: &str) -> Option<(i32, String)> {
        let command = self.mapped(command);
        if let Some(dir) = command.strip_prefix("cd ") {
            self.cwd = self.cwd.join(dir.trim()).canonicalize().unwrap();
            return None;
        }
        if let Some(assignment) = command.strip_prefix("export ") {
            let (name, _) = assignment.split_once('=').unwrap();
            let out = self
                .sh(&format!("{assignment}; printf '%s' \"${name}\""))
                .output()
                .unwrap();
            assert!(out.status.success(), "`{command}` failed");
            self.env
                .insert(name.to_string(), String::from_utf8(out.stdout).unwrap());
            return None;
        }
        if let Some(job) = command.strip_prefix("kill %") {
            let n: usize = job.trim().parse().unwrap();
            let mut job = self.jobs[n - 1].take().expect("the job runs");
            let pid = job.child.id().to_string();
            let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(60);
            while job.child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "job {n} did not stop on SIGTERM:\n{}",
                    job.output.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            return None;
        }
        if let Some(background) = command.strip_suffix('&') {
            let mut child = self
                .sh(&format!("exec {background}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let output = Arc::new(Mutex::new(String::new()));
            for mut stream in [
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                Box::new(child.stderr.take().unwrap()),
            ] {
                let output = output.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        output
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                });
            }
            // A server started in the background is used once it says it listens.
            let deadline = Instant::now() + Duration::from_secs(180);
            while !output.lock().unwrap().contains("listening on") {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "`{command}` ended:\n{}",
                    output.lock().unwrap()
                );
                assert!(
                    Instant::now() < deadline,
                    "`{command}` never listened:\n{}",
                    output.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            self.jobs.push(Some(Job { child, output }));
            return None;
        }
        let out = self.sh(&command).output().unwrap();
        let (stdout, stderr) = common::text(&out);
        Some((out.status.code().unwrap_or(-1), format!("{stdout}{stderr}")))
    }
}

#[test]
fn the_readme_console_blocks_run_as_written() {
    let sandbox = tempfile::tempdir().unwrap();
    let mut session = Session::new(sandbox.path());
    let text = readme();
    let mut ran = 0;
    for block in blocks(&text).iter().filter(|b| b.lang == "console") {
        // Each block starts at the repository's root, as a reader's shell would.
        session.cwd = session.root.clone();
        let mut i = 0;
        while i < block.lines.len() {
            let Some(command) = block.lines[i].strip_prefix("$ ") else {
                panic!(
                    "README.md:{}: output without a command: {}",
                    block.line + i,
                    block.lines[i]
                );
            };
            let line = block.line + i;
            i += 1;
            let start = i;
            while i < block.lines.len() && !block.lines[i].starts_with("$ ") {
                i += 1;
            }
            let mut expected: Vec<&str> =
                block.lines[start..i].iter().map(String::as_str).collect();
            let code = match expected.first().and_then(|l| l.strip_prefix("? ")) {
                Some(code) => {
                    expected.remove(0);
                    code.parse().unwrap()
                }
                None => 0,
            };
            ran += 1;
            let Some((status, output)) = session.run(command) else {
                assert!(
                    expected.is_empty(),
                    "README.md:{line}: `{command}` prints nothing here, yet output follows it"
                );
                continue;
            };
            let actual: Vec<&str> = output.lines().map(str::trim_end).collect();
            assert!(
                status == code && lines_match(&expected, &actual),
                "README.md:{line}: `{command}` exited {status} (expected {code}) and printed:\n{output}\nexpected:\n{}",
                expected.join("\n")
            );
        }
    }
    assert!(ran >= 20, "only {ran} console commands ran");
}

//! Findings (violations and parse errors, located) and the output formats of `-o`: `text`,
//! `json`, `github`, `sarif`, `junit`. Each is the whole of stdout for a run; logs, progress and
//! prompts go to stderr.
//!
//! Columns: `text`, `json`, `github` and `junit` count chars (Unicode scalar values) from 1;
//! `sarif` counts UTF-16 code units from 1 (`columnKind: utf16CodeUnits`), as GitHub code
//! scanning reads it. Ends are exclusive (the column just past the span).

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use serde::Serialize;

use super::files::PolicyFile;
use super::locate::{self, Location};
use super::{Color, Format};
use crate::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }
}

/// One problem of one file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file's path, as [`PolicyFile::path`].
    pub path: String,
    pub location: Location,
    /// The field path the rules gave (empty for a parse error).
    pub field: String,
    /// The UPPER_SNAKE reason: a violation's, or INVALID_JSON, UNKNOWN_FIELD,
    /// CONFLICTING_FIELDS, INVALID_PROTOJSON, DUPLICATE_KEY, UNREADABLE, GRAPH_RULES_NOT_CHECKED.
    pub reason: String,
    pub severity: Severity,
    pub message: String,
}

/// The violations the rules (here or on a server) found in `file`, each located by its field
/// path: the value's span, the key's for SUPERSEDED_FIELD, the parent for a missing field,
/// line 1 when the path does not resolve.
pub fn findings_of(file: &PolicyFile, violations: &[pb::PolicyViolation]) -> Vec<Finding> {
    violations
        .iter()
        .map(|violation| {
            let location = if violation.reason == "SUPERSEDED_FIELD" {
                locate::locate_key(&file.text, &violation.field)
            } else {
                locate::locate(&file.text, &violation.field)
            };
            let severity = match pb::Severity::try_from(violation.severity) {
                Ok(pb::Severity::Warning) => Severity::Warning,
                _ => Severity::Error,
            };
            Finding {
                path: file.path.clone(),
                location,
                field: violation.field.clone(),
                reason: violation.reason.clone(),
                severity,
                message: violation.description.clone(),
            }
        })
        .collect()
}

/// The violations in the BadRequest details of a failed call (a Set refused with
/// INVALID_ARGUMENT, say), located as [`findings_of`] does; none when it has no such details.
pub fn findings_of_status(file: &PolicyFile, status: &tonic::Status) -> Vec<Finding> {
    findings_of(file, &violations_of_status(status))
}

/// The violations in the BadRequest details of a failed call, as errors; none without them.
pub fn violations_of_status(status: &tonic::Status) -> Vec<pb::PolicyViolation> {
    use tonic_types::StatusExt as _;
    let Some(bad_request) = status.get_details_bad_request() else {
        return Vec::new();
    };
    bad_request
        .field_violations
        .into_iter()
        .map(|violation| pb::PolicyViolation {
            field: violation.field,
            reason: violation.reason,
            description: violation.description,
            severity: pb::Severity::Error as i32,
        })
        .collect()
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub files: usize,
    pub valid: usize,
    pub errors: usize,
    pub warnings: usize,
    pub notices: usize,
}

impl Summary {
    pub fn of(files: &[PolicyFile], findings: &[Finding]) -> Summary {
        let count = |severity| {
            findings
                .iter()
                .filter(|finding| finding.severity == severity)
                .count()
        };
        Summary {
            files: files.len(),
            valid: files
                .iter()
                .filter(|file| errors_in(&file.path, findings) == 0)
                .count(),
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            notices: count(Severity::Notice),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} {}, {} valid, {} {}, {} {}",
            self.files,
            plural(self.files, "file", "files"),
            self.valid,
            self.errors,
            plural(self.errors, "error", "errors"),
            self.warnings,
            plural(self.warnings, "warning", "warnings"),
        )
    }
}

fn plural(count: usize, one: &'static str, many: &'static str) -> &'static str {
    if count == 1 { one } else { many }
}

fn errors_in(path: &str, findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|finding| finding.path == path && finding.severity == Severity::Error)
        .count()
}

fn of_file<'f>(path: &'f str, findings: &'f [Finding]) -> impl Iterator<Item = &'f Finding> {
    findings.iter().filter(move |finding| finding.path == path)
}

/// The stdout of a run in `format`. `files` in the order to report them; every finding's path
/// is one of theirs (a finding of another path is reported after them).
pub fn report(format: Format, color: Color, files: &[PolicyFile], findings: &[Finding]) -> String {
    match format {
        Format::Text => text(use_color(color), files, findings),
        Format::Json => json(files, findings),
        Format::Github => github(files, findings),
        Format::Sarif => sarif(files, findings),
        Format::Junit => junit(files, findings),
    }
}

/// Whether to colour: `always`, `never`, or with `auto` when stdout is a terminal and NO_COLOR
/// is unset (or empty), as no-color.org says.
pub fn use_color(color: Color) -> bool {
    match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        }
    }
}

/// The files, then any finding of a path not among them (the caller's bug, never dropped).
fn groups<'f>(
    files: &'f [PolicyFile],
    findings: &'f [Finding],
) -> Vec<(&'f str, Option<&'f PolicyFile>)> {
    let mut out: Vec<(&str, Option<&PolicyFile>)> = files
        .iter()
        .map(|file| (file.path.as_str(), Some(file)))
        .collect();
    for finding in findings {
        if !out.iter().any(|(path, _)| *path == finding.path) {
            out.push((finding.path.as_str(), None));
        }
    }
    out
}

// ---- text ---------------------------------------------------------------------------------

fn text(color: bool, files: &[PolicyFile], findings: &[Finding]) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    for (path, file) in groups(files, findings) {
        for finding in of_file(path, findings) {
            let Location { line, column, .. } = finding.location;
            let (label, code) = match finding.severity {
                Severity::Error => ("error", "1;31"),
                Severity::Warning => ("warning", "1;33"),
                Severity::Notice => ("notice", "1;36"),
            };
            let _ = write!(
                out,
                "{}: {}",
                paint("1", &format!("{path}:{line}:{column}")),
                paint(code, &format!("{label}[{}]", finding.reason)),
            );
            if !finding.field.is_empty() {
                let _ = write!(out, " {}", finding.field);
            }
            let _ = writeln!(out, ": {}", one_line(&finding.message));
            if let Some(file) = file {
                let source = locate::line_text(&file.text, line);
                let number = line.to_string();
                let gutter = " ".repeat(number.len());
                let _ = writeln!(out, " {} {}", paint("1;34", &format!("{number} |")), source);
                let indent: String = source
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let width = if finding.location.end_line == line {
                    finding.location.end_column.saturating_sub(column).max(1)
                } else {
                    source.chars().count().saturating_sub(column - 1).max(1)
                };
                let _ = writeln!(
                    out,
                    " {} {}{}",
                    paint("1;34", &format!("{gutter} |")),
                    indent,
                    paint(code, &"^".repeat(width))
                );
            }
        }
    }
    let _ = writeln!(out, "{}", Summary::of(files, findings).line());
    out
}

fn one_line(text: &str) -> String {
    text.replace("\r\n", " ").replace(['\n', '\r'], " ")
}

// ---- json ---------------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    files: Vec<JsonFile<'a>>,
    summary: Summary,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: &'a str,
    /// `APP/ENTITLEMENT` when the file names one.
    entitlement: Option<String>,
    valid: bool,
    violations: Vec<JsonViolation<'a>>,
}

#[derive(Serialize)]
struct JsonViolation<'a> {
    field: &'a str,
    reason: &'a str,
    severity: Severity,
    description: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

fn json(files: &[PolicyFile], findings: &[Finding]) -> String {
    let report = JsonReport {
        version: 1,
        files: groups(files, findings)
            .into_iter()
            .map(|(path, file)| JsonFile {
                path,
                entitlement: file.and_then(|file| entitlement_of(&file.text)),
                valid: errors_in(path, findings) == 0,
                violations: of_file(path, findings)
                    .map(|finding| JsonViolation {
                        field: &finding.field,
                        reason: &finding.reason,
                        severity: finding.severity,
                        description: &finding.message,
                        line: finding.location.line,
                        column: finding.location.column,
                        end_line: finding.location.end_line,
                        end_column: finding.location.end_column,
                    })
                    .collect(),
            })
            .collect(),
        summary: Summary::of(files, findings),
    };
    let mut out = serde_json::to_string_pretty(&report).expect("the report serializes");
    out.push('\n');
    out
}

/// `APP/ENTITLEMENT` of a policy file that parses as JSON and names both.
pub fn entitlement_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let entitlement = value.get("policy")?.get("entitlement")?;
    let field = |camel: &str, snake: &str| {
        entitlement
            .get(camel)
            .or_else(|| entitlement.get(snake))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    Some(format!(
        "{}/{}",
        field("appId", "app_id")?,
        field("entitlementId", "entitlement_id")?
    ))
}

// ---- github -------------------------------------------------------------------------------

/// A workflow command's message, escaped as `@actions/core` (`escapeData` in command.ts).
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`escapeProperty` in command.ts).
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn github(files: &[PolicyFile], findings: &[Finding]) -> String {
    let mut out = String::new();
    for (path, _) in groups(files, findings) {
        let _ = writeln!(out, "::group::{}", escape_data(path));
        let mut any = false;
        for finding in of_file(path, findings) {
            any = true;
            let Location {
                line,
                column,
                end_line,
                end_column,
            } = finding.location;
            let mut properties = vec![
                format!("file={}", escape_property(&github_path(path))),
                format!("line={line}"),
            ];
            // Columns only on one line (GitHub ignores them otherwise).
            if end_line == line {
                properties.push(format!("col={column}"));
                properties.push(format!("endLine={end_line}"));
                properties.push(format!("endColumn={}", end_column.max(column)));
            } else {
                properties.push(format!("endLine={end_line}"));
            }
            properties.push(format!("title={}", escape_property(&finding.reason)));
            let message = if finding.field.is_empty() {
                finding.message.clone()
            } else {
                format!("{}: {}", finding.field, finding.message)
            };
            let _ = writeln!(
                out,
                "::{} {}::{}",
                finding.severity.as_str(),
                properties.join(","),
                escape_data(&message)
            );
        }
        if !any {
            let _ = writeln!(out, "{path}: valid");
        }
        let _ = writeln!(out, "::endgroup::");
    }
    let _ = writeln!(out, "{}", Summary::of(files, findings).line());
    out
}

/// Paths in annotations use `/`, relative as given.
fn github_path(path: &str) -> String {
    let path = path.replace('\\', "/");
    path.strip_prefix("./").map(str::to_owned).unwrap_or(path)
}

// ---- sarif --------------------------------------------------------------------------------

#[derive(Serialize)]
struct Sarif<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<SarifRun<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRun<'a> {
    tool: SarifTool,
    artifacts: Vec<SarifArtifact>,
    results: Vec<SarifResult<'a>>,
    column_kind: &'static str,
}

#[derive(Serialize)]
struct SarifTool {
    driver: SarifDriver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifDriver {
    name: &'static str,
    rules: Vec<SarifRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRule {
    id: String,
    short_description: SarifText,
}

#[derive(Serialize)]
struct SarifText {
    text: String,
}

#[derive(Serialize)]
struct SarifArtifact {
    location: SarifArtifactLocation,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    rule_id: &'a str,
    level: &'static str,
    message: SarifText,
    locations: Vec<SarifLocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifLocation {
    physical_location: SarifPhysical,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifPhysical {
    artifact_location: SarifArtifactLocation,
    region: SarifRegion,
}

#[derive(Serialize)]
struct SarifArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifRegion {
    start_line: usize,
    start_column: usize,
    end_line: usize,
    end_column: usize,
}

fn sarif(files: &[PolicyFile], findings: &[Finding]) -> String {
    let mut rules: Vec<String> = findings.iter().map(|f| f.reason.clone()).collect();
    rules.sort();
    rules.dedup();
    let text_of = |path: &str| {
        files
            .iter()
            .find(|file| file.path == path)
            .map(|file| file.text.as_str())
    };
    let utf16 = |path: &str, line: usize, column: usize| match text_of(path) {
        Some(text) => locate::utf16_column(text, line, column),
        None => column,
    };
    let results = groups(files, findings)
        .into_iter()
        .flat_map(|(path, _)| of_file(path, findings))
        .map(|finding| {
            let Location {
                line,
                column,
                end_line,
                end_column,
            } = finding.location;
            let start_column = utf16(&finding.path, line, column).max(1);
            let end_column = utf16(&finding.path, end_line, end_column).max(1);
            let (end_line, end_column) = if (end_line, end_column) <= (line, start_column) {
                (line, start_column + 1)
            } else {
                (end_line, end_column)
            };
            SarifResult {
                rule_id: &finding.reason,
                level: match finding.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Notice => "note",
                },
                message: SarifText {
                    text: if finding.field.is_empty() {
                        finding.message.clone()
                    } else {
                        format!("{}: {}", finding.field, finding.message)
                    },
                },
                locations: vec![SarifLocation {
                    physical_location: SarifPhysical {
                        artifact_location: SarifArtifactLocation {
                            uri: github_path(&finding.path),
                        },
                        region: SarifRegion {
                            start_line: line.max(1),
                            start_column,
                            end_line,
                            end_column,
                        },
                    },
                }],
            }
        })
        .collect();
    let report = Sarif {
        schema: "https://json.schemastore.org/sarif-2.1.0.json",
        version: "2.1.0",
        runs: vec![SarifRun {
            tool: SarifTool {
                driver: SarifDriver {
                    name: "provisionctl",
                    rules: rules
                        .into_iter()
                        .map(|id| SarifRule {
                            short_description: SarifText { text: id.clone() },
                            id,
                        })
                        .collect(),
                },
            },
            artifacts: groups(files, findings)
                .into_iter()
                .map(|(path, _)| SarifArtifact {
                    location: SarifArtifactLocation {
                        uri: github_path(path),
                    },
                })
                .collect(),
            results,
            column_kind: "utf16CodeUnits",
        }],
    };
    let mut out = serde_json::to_string_pretty(&report).expect("the SARIF log serializes");
    out.push('\n');
    out
}

// ---- junit --------------------------------------------------------------------------------

/// Text for XML 1.0 content and attributes: the five entities escaped, the characters XML 1.0
/// cannot hold (controls but tab, newline, carriage return) left out.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn junit(files: &[PolicyFile], findings: &[Finding]) -> String {
    let groups = groups(files, findings);
    let summary = Summary::of(files, findings);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"provisionctl validate\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
        groups.len(),
        summary.errors
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"provisionctl validate\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\">",
        groups.len(),
        summary.errors
    );
    for (path, _) in &groups {
        let name = escape_xml(path);
        let mine: Vec<&Finding> = of_file(path, findings).collect();
        if mine.is_empty() {
            let _ = writeln!(
                out,
                "    <testcase name=\"{name}\" classname=\"provisionctl.validate\"/>"
            );
            continue;
        }
        let _ = writeln!(
            out,
            "    <testcase name=\"{name}\" classname=\"provisionctl.validate\">"
        );
        let mut others = String::new();
        for finding in &mine {
            let place = format!(
                "{}:{}:{}",
                finding.path, finding.location.line, finding.location.column
            );
            let detail = if finding.field.is_empty() {
                format!("{place}: {}", finding.message)
            } else {
                format!("{place}: {}: {}", finding.field, finding.message)
            };
            if finding.severity == Severity::Error {
                let _ = writeln!(
                    out,
                    "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                    escape_xml(&finding.reason),
                    escape_xml(&one_line(&finding.message)),
                    escape_xml(&detail)
                );
            } else {
                let _ = writeln!(
                    others,
                    "{}[{}] {detail}",
                    finding.severity.as_str(),
                    finding.reason
                );
            }
        }
        if !others.is_empty() {
            let _ = writeln!(
                out,
                "      <system-out>{}</system-out>",
                escape_xml(others.trim_end())
            );
        }
        let _ = writeln!(out, "    </testcase>");
    }
    let _ = writeln!(out, "  </testsuite>");
    let _ = writeln!(out, "</testsuites>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escaping_is_that_of_the_actions_toolkit() {
        assert_eq!(escape_data("50% a\r\nb: c, d"), "50%25 a%0D%0Ab: c, d");
        assert_eq!(
            escape_property("dir,with:odd%\nname.json"),
            "dir%2Cwith%3Aodd%25%0Aname.json"
        );
    }

    #[test]
    fn xml_escaping_keeps_documents_valid() {
        assert_eq!(
            escape_xml("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}

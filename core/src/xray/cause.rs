//! `exception` events → X-Ray `cause.exceptions`, with stack frames parsed from
//! `exception.stacktrace` for the languages whose format is known (Java, Python, JavaScript/Node.js,
//! .NET), chained causes included (Java `Caused by:`, Python's chained tracebacks).
//!
//! Frames borrow from the stack trace text: parsing allocates only the frame vectors.

use super::json::{rsplit_once_str, split_once_str};

/// The language of the SDK that produced a span (`telemetry.sdk.language`), which decides how a
/// stack trace is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Java and PHP (PHP's SDK formats stack traces as Java does).
    Java,
    /// CPython tracebacks.
    Python,
    /// V8 (`nodejs`, `javascript`, `webjs`).
    JavaScript,
    /// .NET.
    DotNet,
    /// Anything else: no frames are parsed.
    Other,
}

impl Language {
    /// From `telemetry.sdk.language`.
    pub fn from_sdk_language(s: &str) -> Language {
        match s {
            "java" | "php" => Language::Java,
            "python" => Language::Python,
            "nodejs" | "javascript" | "webjs" => Language::JavaScript,
            "dotnet" => Language::DotNet,
            _ => Language::Other,
        }
    }
}

/// One stack frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// File (or class file) path.
    pub path: &'a str,
    /// Line number, when known.
    pub line: Option<u32>,
    /// Function or method.
    pub label: &'a str,
}

/// An exception read from a stack trace: the reported one first, then its causes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Type, for causes (the reported exception's type comes from `exception.type`).
    pub ty: &'a str,
    /// Message, for causes.
    pub message: &'a str,
    /// Innermost frame first.
    pub frames: Vec<Frame<'a>>,
}

/// Parses `stacktrace`. The first element is the reported exception (its `ty`/`message` are
/// whatever the trace says and are normally replaced by the event's attributes); the rest are its
/// chained causes, outermost first. Unknown formats give one element without frames.
pub fn parse_stacktrace(stacktrace: &str, language: Language) -> Vec<Parsed<'_>> {
    match language {
        Language::Java => parse_java(stacktrace),
        Language::Python => parse_python(stacktrace),
        Language::JavaScript => vec![parse_javascript(stacktrace)],
        Language::DotNet => vec![parse_dotnet(stacktrace)],
        Language::Other => vec![Parsed {
            ty: "",
            message: "",
            frames: Vec::new(),
        }],
    }
}

fn split_type_message(line: &str) -> (&str, &str) {
    match line.split_once(':') {
        Some((ty, msg)) => (ty.trim(), msg.trim()),
        None => (line.trim(), ""),
    }
}

fn parse_line_number(s: &str) -> Option<u32> {
    s.trim().parse().ok()
}

/// `Type: message` / `\tat pkg.Class.method(File.java:42)` / `Caused by: Type: message` /
/// `\t... 3 more`. Frames of `Suppressed:` blocks are indented deeper and skipped.
fn parse_java(trace: &str) -> Vec<Parsed<'_>> {
    let mut lines = trace.lines();
    let (ty, message) = split_type_message(lines.next().unwrap_or(""));
    let mut out = vec![Parsed {
        ty,
        message,
        frames: Vec::new(),
    }];
    for line in lines {
        if let Some(rest) = line.strip_prefix("\tat ") {
            let rest = rest.trim_end();
            let Some(open) = rest.find('(') else { continue };
            let Some(inner) = rest[open + 1..].strip_suffix(')') else {
                continue;
            };
            let mut label = &rest[..open];
            if let Some(slash) = label.rfind('/') {
                // Class loader or module prefix: `app//com.example.Main.run`.
                label = &label[slash + 1..];
            }
            let (path, line) = match inner.rsplit_once(':') {
                Some((p, n)) if parse_line_number(n).is_some() => (p, parse_line_number(n)),
                _ => (inner, None),
            };
            if let Some(last) = out.last_mut() {
                last.frames.push(Frame { path, line, label });
            }
        } else if let Some(rest) = line.strip_prefix("Caused by: ") {
            let (ty, message) = split_type_message(rest);
            out.push(Parsed {
                ty,
                message,
                frames: Vec::new(),
            });
        }
    }
    out
}

/// CPython: blocks of `Traceback (most recent call last):`, `  File "p", line N, in f` lines
/// (outermost first) and a final `Type: message`, chained by "During handling of the above
/// exception…" / "The above exception was the direct cause…". The last block is the reported
/// exception; earlier blocks are its causes.
fn parse_python(trace: &str) -> Vec<Parsed<'_>> {
    const SEPARATORS: [&str; 2] = [
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    ];
    let mut blocks: Vec<Parsed<'_>> = Vec::new();
    let mut current = Parsed {
        ty: "",
        message: "",
        frames: Vec::new(),
    };
    let mut exception_line: Option<&str> = None;
    for line in trace.lines() {
        if SEPARATORS.contains(&line.trim()) {
            finish_python_block(&mut current, exception_line.take());
            blocks.push(std::mem::replace(
                &mut current,
                Parsed {
                    ty: "",
                    message: "",
                    frames: Vec::new(),
                },
            ));
            continue;
        }
        if let Some(rest) = line.trim_start().strip_prefix("File \"") {
            if !line.starts_with(' ') {
                continue;
            }
            if let Some(frame) = parse_python_frame(rest) {
                current.frames.push(frame);
            }
            exception_line = None;
        } else if !line.is_empty()
            && !line.starts_with(' ')
            && !line.starts_with('\t')
            && !line.starts_with("Traceback (most recent call last)")
            && exception_line.is_none()
        {
            exception_line = Some(line);
        }
    }
    finish_python_block(&mut current, exception_line);
    blocks.push(current);
    blocks.reverse();
    blocks
}

fn finish_python_block<'a>(block: &mut Parsed<'a>, exception_line: Option<&'a str>) {
    block.frames.reverse();
    if let Some(line) = exception_line {
        let (ty, message) = split_type_message(line);
        block.ty = ty;
        block.message = message;
    }
}

/// `/var/task/app.py", line 42, in handler` (the part after `File "`).
fn parse_python_frame(rest: &str) -> Option<Frame<'_>> {
    let (path, rest) = split_once_str(rest, "\", line ")?;
    let (line, label) = match split_once_str(rest, ", in ") {
        Some((n, label)) => (parse_line_number(n), label.trim_end()),
        None => (parse_line_number(rest), ""),
    };
    Some(Frame { path, line, label })
}

/// V8: `Type: message` (possibly several lines), then `    at label (path:line:col)` or
/// `    at path:line:col`.
fn parse_javascript(trace: &str) -> Parsed<'_> {
    let mut lines = trace.lines();
    let (ty, message) = split_type_message(lines.next().unwrap_or(""));
    let mut frames = Vec::new();
    for line in lines {
        let Some(rest) = line.trim_start().strip_prefix("at ") else {
            continue;
        };
        if !line.starts_with(' ') && !line.starts_with('\t') {
            continue;
        }
        let rest = rest.trim_end();
        let (label, location) = match rest
            .strip_suffix(')')
            .and_then(|r| rsplit_once_str(r, " ("))
        {
            Some((label, location)) => (label, location),
            None => ("", rest),
        };
        let (path, line) = split_js_location(location);
        frames.push(Frame { path, line, label });
    }
    Parsed {
        ty,
        message,
        frames,
    }
}

/// `path:line:col` → (path, line); anything else is all path.
fn split_js_location(location: &str) -> (&str, Option<u32>) {
    if let Some((rest, col)) = location.rsplit_once(':')
        && parse_line_number(col).is_some()
        && let Some((path, line)) = rest.rsplit_once(':')
        && let Some(n) = parse_line_number(line)
    {
        return (path, Some(n));
    }
    (location, None)
}

/// .NET: `System.Exception: message`, then `   at Ns.Class.Method() in /path/File.cs:line 42`.
fn parse_dotnet(trace: &str) -> Parsed<'_> {
    let mut lines = trace.lines();
    let (ty, message) = split_type_message(lines.next().unwrap_or(""));
    let mut frames = Vec::new();
    for line in lines {
        let Some(rest) = line.trim().strip_prefix("at ") else {
            continue;
        };
        let (label, path, line) = match split_once_str(rest, " in ") {
            Some((label, location)) => match rsplit_once_str(location, ":line ") {
                Some((path, n)) => (label, path, parse_line_number(n)),
                None => (label, location, None),
            },
            None => (rest, "", None),
        };
        frames.push(Frame { path, line, label });
    }
    Parsed {
        ty,
        message,
        frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_traceback_innermost_frame_first() {
        let trace = "Traceback (most recent call last):\n  File \"/var/task/app.py\", line 42, in handler\n    r.raise_for_status()\n  File \"/opt/python/requests/models.py\", line 1021, in raise_for_status\n    raise HTTPError(http_error_msg, response=self)\nrequests.exceptions.HTTPError: 503 Server Error\n";
        let parsed = parse_stacktrace(trace, Language::Python);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].ty, "requests.exceptions.HTTPError");
        assert_eq!(parsed[0].message, "503 Server Error");
        assert_eq!(
            parsed[0].frames,
            vec![
                Frame {
                    path: "/opt/python/requests/models.py",
                    line: Some(1021),
                    label: "raise_for_status"
                },
                Frame {
                    path: "/var/task/app.py",
                    line: Some(42),
                    label: "handler"
                },
            ]
        );
    }

    #[test]
    fn python_chained_exceptions() {
        let trace = "Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n    x()\nKeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"/b.py\", line 2, in g\n    f()\nValueError: bad\n";
        let parsed = parse_stacktrace(trace, Language::Python);
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].ty, parsed[0].message), ("ValueError", "bad"));
        assert_eq!(
            parsed[0].frames,
            vec![Frame {
                path: "/b.py",
                line: Some(2),
                label: "g"
            }]
        );
        assert_eq!((parsed[1].ty, parsed[1].message), ("KeyError", "'k'"));
        assert_eq!(
            parsed[1].frames,
            vec![Frame {
                path: "/a.py",
                line: Some(1),
                label: "f"
            }]
        );
    }

    #[test]
    fn java_with_cause_and_module_prefix() {
        let trace = "java.lang.IllegalStateException: outer\n\tat app//com.example.Main.run(Main.java:10)\n\tat com.example.Main.main(Main.java)\nCaused by: java.io.IOException: disk\n\tat com.example.Io.read(Io.java:5)\n\t... 2 more\n\tSuppressed: x\n\t\tat skip.Me(S.java:1)\n";
        let parsed = parse_stacktrace(trace, Language::Java);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0].frames,
            vec![
                Frame {
                    path: "Main.java",
                    line: Some(10),
                    label: "com.example.Main.run"
                },
                Frame {
                    path: "Main.java",
                    line: None,
                    label: "com.example.Main.main"
                },
            ]
        );
        assert_eq!(
            (parsed[1].ty, parsed[1].message),
            ("java.io.IOException", "disk")
        );
        assert_eq!(
            parsed[1].frames,
            vec![Frame {
                path: "Io.java",
                line: Some(5),
                label: "com.example.Io.read"
            }]
        );
    }

    #[test]
    fn javascript_frames() {
        let trace = "TypeError: Cannot read properties of undefined (reading 'x')\n    at handler (/var/task/index.mjs:12:7)\n    at Runtime.handleOnceNonStreaming (file:///var/runtime/index.mjs:1173:29)\n    at /var/task/anon.js:3:1\n    at new Promise (<anonymous>)\n";
        let p = parse_stacktrace(trace, Language::JavaScript);
        assert_eq!(
            p[0].frames,
            vec![
                Frame {
                    path: "/var/task/index.mjs",
                    line: Some(12),
                    label: "handler"
                },
                Frame {
                    path: "file:///var/runtime/index.mjs",
                    line: Some(1173),
                    label: "Runtime.handleOnceNonStreaming"
                },
                Frame {
                    path: "/var/task/anon.js",
                    line: Some(3),
                    label: ""
                },
                Frame {
                    path: "<anonymous>",
                    line: None,
                    label: "new Promise"
                },
            ]
        );
    }

    #[test]
    fn dotnet_frames() {
        let trace = "System.InvalidOperationException: nope\n   at App.Handler.Run() in /src/Handler.cs:line 42\n   at App.Main()\n";
        let p = parse_stacktrace(trace, Language::DotNet);
        assert_eq!(
            p[0].frames,
            vec![
                Frame {
                    path: "/src/Handler.cs",
                    line: Some(42),
                    label: "App.Handler.Run()"
                },
                Frame {
                    path: "",
                    line: None,
                    label: "App.Main()"
                },
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        for lang in [
            Language::Java,
            Language::Python,
            Language::JavaScript,
            Language::DotNet,
            Language::Other,
        ] {
            for t in [
                "",
                "\n",
                "\tat (",
                "  File \"",
                "  File \"x\", line ",
                "    at :",
                "Caused by: ",
                "   at  in :line x",
                "During handling of the above exception, another exception occurred:",
            ] {
                let p = parse_stacktrace(t, lang);
                assert!(!p.is_empty());
            }
        }
        assert_eq!(Language::from_sdk_language("nodejs"), Language::JavaScript);
        assert_eq!(Language::from_sdk_language("rust"), Language::Other);
    }
}

//! Splitting a Windows command line into argv.
//!
//! Windows hands a process one string; each program splits it itself. This follows the
//! Microsoft C runtime's documented rules ("Parsing C command-line arguments"), which is what
//! the vast majority of programs (and `CommandLineToArgvW`, for the cases that matter) do, so
//! argv here is what the program most likely saw. Rules that match on the whole string (Sigma's
//! `CommandLine`) should use the raw command line, which records keep alongside.

/// Splits `command_line` into arguments.
pub fn split(command_line: &str) -> Vec<String> {
    let mut chars = command_line.chars().peekable();
    let mut args = Vec::new();

    // argv[0] is a path: quotes group, nothing escapes, the quotes themselves are dropped.
    let mut program = String::new();
    let mut quoted = false;
    while let Some(&c) = chars.peek() {
        if !quoted && (c == ' ' || c == '\t') {
            break;
        }
        chars.next();
        if c == '"' {
            quoted = !quoted;
        } else {
            program.push(c);
        }
    }
    args.push(program);

    loop {
        while matches!(chars.peek(), Some(' ') | Some('\t')) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' if !quoted => break,
                '\\' => {
                    let mut backslashes = 0;
                    while chars.peek() == Some(&'\\') {
                        chars.next();
                        backslashes += 1;
                    }
                    if chars.peek() == Some(&'"') {
                        // 2n backslashes + quote: n backslashes, and the quote delimits;
                        // 2n+1: n backslashes and a literal quote.
                        arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                        if backslashes % 2 == 1 {
                            chars.next();
                            arg.push('"');
                        }
                    } else {
                        arg.extend(std::iter::repeat_n('\\', backslashes));
                    }
                }
                '"' => {
                    chars.next();
                    if quoted && chars.peek() == Some(&'"') {
                        // `""` inside quotes is one literal quote, and quoting goes on.
                        chars.next();
                        arg.push('"');
                    } else {
                        quoted = !quoted;
                    }
                }
                _ => {
                    chars.next();
                    arg.push(c);
                }
            }
        }
        args.push(arg);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::split;

    fn args(line: &str) -> Vec<String> {
        split(line)
    }

    #[test]
    fn program_name_is_taken_verbatim_inside_quotes() {
        assert_eq!(
            args(r#""C:\Program Files\App\app.exe" --flag"#),
            [r"C:\Program Files\App\app.exe", "--flag"]
        );
        // Backslashes before a quote in argv[0] are not escapes.
        assert_eq!(args(r#""C:\dir\\" x"#), [r"C:\dir\\", "x"]);
        assert_eq!(args("notepad.exe"), ["notepad.exe"]);
    }

    #[test]
    fn documented_examples() {
        // The table of "Parsing C command-line arguments", after a program name.
        assert_eq!(args(r#"p "abc" d e"#), ["p", "abc", "d", "e"]);
        assert_eq!(args(r#"p a\\b d"e f"g h"#), ["p", r"a\\b", "de fg", "h"]);
        assert_eq!(args(r#"p a\\\"b c d"#), ["p", r#"a\"b"#, "c", "d"]);
        assert_eq!(args(r#"p a\\\\"b c" d e"#), ["p", r"a\\b c", "d", "e"]);
        assert_eq!(args(r#"p a"b"" c d"#), ["p", r#"ab" c d"#]);
    }

    #[test]
    fn empty_quoted_arguments_survive_and_extra_whitespace_does_not() {
        assert_eq!(args("p \"\"  \t x  "), ["p", "", "x"]);
        assert_eq!(args(""), [""]);
    }

    #[test]
    fn powershell_encoded_command_keeps_its_arguments() {
        assert_eq!(
            args(r#"powershell.exe -NoP -W Hidden -Enc SQBFAFgA "a b""#),
            [
                "powershell.exe",
                "-NoP",
                "-W",
                "Hidden",
                "-Enc",
                "SQBFAFgA",
                "a b"
            ]
        );
    }
}

//! NUT network protocol words: quoting and splitting (`docs/net-protocol.txt`).
//!
//! Arguments with spaces, quotes or backslashes are sent in double quotes with `\"` and `\\`
//! escaped; replies are split the same way.

/// Quote `word` if the protocol needs it.
pub fn quote(word: &str) -> String {
    let needs = word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\');
    if !needs {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Split a reply line into words, undoing quotes and escapes.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {line:?}")),
                    Some('\\') => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err(format!("dangling escape in {line:?}")),
                    },
                    Some('"') => break,
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips() {
        for w in ["OL", "OB LB", "", "pa\"ss", "back\\slash", "two  spaces"] {
            let line = format!("VAR ups ups.status {}", quote(w));
            let words = split(&line).expect("split");
            assert_eq!(words.len(), 4, "{line}");
            assert_eq!(words[3], w);
        }
        assert_eq!(quote("OL"), "OL");
        assert_eq!(quote("OB LB"), "\"OB LB\"");
    }

    #[test]
    fn reply_lines_split() {
        assert_eq!(
            split("VAR ups1 ups.status \"OB DISCHRG LB\"\n").expect("split"),
            vec!["VAR", "ups1", "ups.status", "OB DISCHRG LB"]
        );
        assert_eq!(
            split("ERR ACCESS-DENIED").expect("split"),
            vec!["ERR", "ACCESS-DENIED"]
        );
        assert!(split("VAR u v \"open").is_err());
    }
}

//! Telegram's HTML check for `parse_mode=HTML`: only its tags, balanced, with its
//! entities.
//!
//! Owns: the tag list and the parser that answers "can't parse entities" as Telegram
//! would. Must never: accept what Telegram refuses.

pub(crate) const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

/// Checks `text` as Telegram's HTML parse mode does and returns the text a user reads.
///
/// Only Telegram's tags are allowed and they must nest properly; `&lt; &gt; &amp; &quot;`
/// and numeric entities are decoded; any other `&` is kept literally.
pub fn parse_telegram_html(text: &str) -> Result<String, String> {
    let mut plain = String::with_capacity(text.len());
    let mut open_tags: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(position) = rest.find(['<', '&']) {
        plain.push_str(&rest[..position]);
        let offset = text.len() - rest.len() + position;
        rest = &rest[position..];
        if rest.starts_with('&') {
            let (decoded, used) = decode_entity(rest);
            plain.push_str(&decoded);
            rest = &rest[used..];
            continue;
        }
        let end = rest
            .find('>')
            .ok_or_else(|| format!("Unclosed start tag at byte offset {offset}"))?;
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match open_tags.pop() {
                Some(open) if open == name => {}
                _ => return Err(format!("Unexpected end tag at byte offset {offset}")),
            }
            continue;
        }
        let name = inner
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if !HTML_TAGS.contains(&name.as_str()) {
            return Err(format!(
                "Unsupported start tag \"{name}\" at byte offset {offset}"
            ));
        }
        open_tags.push(name);
    }
    plain.push_str(rest);
    match open_tags.last() {
        Some(open) => Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        )),
        None => Ok(plain),
    }
}

/// Decodes the entity at the start of `text` (which starts with `&`): (text, bytes used).
pub(crate) fn decode_entity(text: &str) -> (String, usize) {
    // Byte search: a `;` byte is always a char boundary, so the slices below are safe.
    let Some(semicolon) = text.bytes().take(12).position(|b| b == b';') else {
        return ("&".to_owned(), 1);
    };
    let name = &text[1..semicolon];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => name.strip_prefix('#').and_then(|number| {
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => number.parse().ok(),
            };
            code.and_then(char::from_u32)
        }),
    };
    match decoded {
        Some(c) => (c.to_string(), semicolon + 1),
        None => ("&".to_owned(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_accepts_telegram_tags_and_entities() {
        assert_eq!(
            parse_telegram_html("<b>a&lt;b</b> &amp; c &x").unwrap(),
            "a<b & c &x"
        );
        assert!(
            parse_telegram_html("<dev>")
                .unwrap_err()
                .contains("Unsupported start tag")
        );
        assert!(parse_telegram_html("<b>x").is_err());
        assert!(parse_telegram_html("<b>x</i>").is_err());
    }
}

//! Key templates for the Kubernetes Secret, e.g.
//! `postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}`.
//!
//! Syntax: literal text with `{{ key }}` or `{{ key | filter }}` (filters chain left to right,
//! spaces inside the braces are optional). Keys: `username`, `password`, `host`, `port`,
//! `dbname` (empty when the secret has none, like the Secret's own `dbname` key), `engine`.
//! Filter: `urlencode` percent-encodes every byte except the RFC 3986 unreserved characters
//! `A-Z a-z 0-9 - . _ ~`, so the result is safe in a URL's userinfo, path or query.
//! Text outside braces is copied as is (a lone `}}` included); there is no escape for a
//! literal `{{`.
//!
//! Errors describe the template (position, the key or filter written) and never contain a
//! value or rendered output.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::secret::SecretString;

/// Everything except the RFC 3986 unreserved set.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const KEYS: [&str; 6] = ["username", "password", "host", "port", "dbname", "engine"];
const FILTERS: [&str; 1] = ["urlencode"];

/// The values a template can use. Borrowed: rendering copies them once, into the result.
pub struct TemplateValues<'a> {
    pub username: &'a str,
    pub password: &'a SecretString,
    pub host: &'a str,
    pub port: u16,
    pub dbname: Option<&'a str>,
    pub engine: &'a str,
}

/// A template that cannot be used. Offsets are byte offsets into the template.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("'{{{{' at offset {offset} is never closed with '}}}}'")]
    Unclosed { offset: usize },
    #[error("empty placeholder at offset {offset}: write {{{{ key }}}} with one of {}", KEYS.join(", "))]
    Empty { offset: usize },
    #[error("unknown key {key:?} at offset {offset}{}; known keys: {}", hint(suggestion), KEYS.join(", "))]
    UnknownKey {
        key: String,
        offset: usize,
        suggestion: Option<&'static str>,
    },
    #[error("unknown filter {filter:?} at offset {offset}{}; known filters: {}", hint(suggestion), FILTERS.join(", "))]
    UnknownFilter {
        filter: String,
        offset: usize,
        suggestion: Option<&'static str>,
    },
    #[error("placeholder at offset {offset}: {detail}")]
    Syntax { offset: usize, detail: &'static str },
}

fn hint(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Key {
    Username,
    Password,
    Host,
    Port,
    Dbname,
    Engine,
}

#[derive(Clone, Copy)]
enum Filter {
    UrlEncode,
}

enum Segment<'t> {
    Text(&'t str),
    Field { key: Key, filters: Vec<Filter> },
}

/// Checks syntax, keys and filters without any values (for admission and status).
pub fn validate(template: &str) -> Result<(), TemplateError> {
    parse(template).map(|_| ())
}

/// Renders the template. The result can hold the password, hence a [`SecretString`].
pub fn render(template: &str, values: &TemplateValues<'_>) -> Result<SecretString, TemplateError> {
    let segments = parse(template)?;
    let port = values.port.to_string();
    // Sized up front (worst case: every value percent-encoded) so the buffer holding the
    // password is not reallocated, which would leave copies behind in freed memory.
    let values_len = values.username.len()
        + values.password.expose().len()
        + values.host.len()
        + values.dbname.map_or(0, str::len);
    let fields = segments
        .iter()
        .filter(|s| matches!(s, Segment::Field { .. }))
        .count();
    let mut out = String::with_capacity(
        template.len() + fields * (3 * values_len + 3 * values.engine.len() + 5),
    );
    for segment in &segments {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Field { key, filters } => {
                let raw = match key {
                    Key::Username => values.username,
                    Key::Password => values.password.expose(),
                    Key::Host => values.host,
                    Key::Port => &port,
                    Key::Dbname => values.dbname.unwrap_or(""),
                    Key::Engine => values.engine,
                };
                match filters.as_slice() {
                    [] => out.push_str(raw),
                    [Filter::UrlEncode] => out.extend(utf8_percent_encode(raw, URL_COMPONENT)),
                    // Chained filters: each applies to the previous output. Rare; the
                    // intermediate copy is wrapped so it is zeroed when dropped.
                    _ => {
                        let mut value = SecretString::new(raw);
                        for filter in filters {
                            value = match filter {
                                Filter::UrlEncode => SecretString::new(
                                    utf8_percent_encode(value.expose(), URL_COMPONENT).to_string(),
                                ),
                            };
                        }
                        out.push_str(value.expose());
                    }
                }
            }
        }
    }
    Ok(SecretString::new(out))
}

fn parse(template: &str) -> Result<Vec<Segment<'_>>, TemplateError> {
    let mut segments = Vec::new();
    let mut rest = template;
    let mut pos = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            segments.push(Segment::Text(&rest[..open]));
        }
        let offset = pos + open;
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            return Err(TemplateError::Unclosed { offset });
        };
        let inner = &after_open[..close];
        if inner.contains("{{") {
            return Err(TemplateError::Unclosed { offset });
        }
        segments.push(parse_field(inner, offset)?);
        let consumed = open + 2 + close + 2;
        pos += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest));
    }
    Ok(segments)
}

fn parse_field(inner: &str, offset: usize) -> Result<Segment<'static>, TemplateError> {
    if inner.trim().is_empty() {
        return Err(TemplateError::Empty { offset });
    }
    let mut parts = inner.split('|').map(str::trim);
    let key_name = parts.next().unwrap_or("");
    let key = match key_name {
        "username" => Key::Username,
        "password" => Key::Password,
        "host" => Key::Host,
        "port" => Key::Port,
        "dbname" => Key::Dbname,
        "engine" => Key::Engine,
        "" => {
            return Err(TemplateError::Syntax {
                offset,
                detail: "a filter needs a key before '|'",
            });
        }
        other if other.contains(char::is_whitespace) => {
            return Err(TemplateError::Syntax {
                offset,
                detail: "one key per placeholder; separate filters with '|'",
            });
        }
        other => {
            return Err(TemplateError::UnknownKey {
                key: shorten(other),
                offset,
                suggestion: closest(other, &KEYS),
            });
        }
    };
    let mut filters = Vec::new();
    for name in parts {
        filters.push(match name {
            "urlencode" => Filter::UrlEncode,
            "" => {
                return Err(TemplateError::Syntax {
                    offset,
                    detail: "empty filter after '|'",
                });
            }
            other => {
                return Err(TemplateError::UnknownFilter {
                    filter: shorten(other),
                    offset,
                    suggestion: closest(other, &FILTERS),
                });
            }
        });
    }
    Ok(Segment::Field { key, filters })
}

/// Unknown names are echoed to help the author; keep them short in case someone pasted a
/// long string (even a value) between the braces.
fn shorten(name: &str) -> String {
    const MAX: usize = 32;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_string(),
    }
}

/// The known name within edit distance 2 (case-insensitive), if one is unambiguous enough.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}";

    fn values<'a>(password: &'a SecretString, dbname: Option<&'a str>) -> TemplateValues<'a> {
        TemplateValues {
            username: "app_user",
            password,
            host: "db.example.internal",
            port: 5432,
            dbname,
            engine: "postgres",
        }
    }

    fn all_printable() -> String {
        (0x20u8..=0x7e).map(char::from).collect()
    }

    #[test]
    fn renders_every_key() {
        let pw = SecretString::new("s3cret");
        let out = render(
            "{{username}} {{ password }} {{host}} {{port}} {{dbname}} {{ engine }}",
            &values(&pw, Some("orders")),
        )
        .unwrap();
        assert_eq!(
            out.expose(),
            "app_user s3cret db.example.internal 5432 orders postgres"
        );
        let out = render(URL, &values(&pw, Some("orders"))).unwrap();
        assert_eq!(
            out.expose(),
            "postgres://app_user:s3cret@db.example.internal:5432/orders"
        );
        // No dbname: empty, like the Secret's default `dbname` key.
        assert_eq!(
            render("/{{ dbname }}", &values(&pw, None))
                .unwrap()
                .expose(),
            "/"
        );
        // No placeholders; a lone closing pair and single braces are text.
        assert_eq!(
            render("a } b }} {c}", &values(&pw, None)).unwrap().expose(),
            "a } b }} {c}"
        );
        assert_eq!(render("", &values(&pw, None)).unwrap().expose(), "");
    }

    #[test]
    fn urlencode_keeps_only_unreserved() {
        let pw = SecretString::new(all_printable());
        let out = render("{{ password | urlencode }}", &values(&pw, None)).unwrap();
        let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let mut expected = String::new();
        for b in 0x20u8..=0x7e {
            if unreserved(b) {
                expected.push(char::from(b));
            } else {
                expected.push_str(&format!("%{b:02X}"));
            }
        }
        assert_eq!(out.expose(), expected);
        // Non-ASCII is encoded as UTF-8 bytes.
        let pw = SecretString::new("é");
        assert_eq!(
            render("{{password|urlencode}}", &values(&pw, None))
                .unwrap()
                .expose(),
            "%C3%A9"
        );
        // Filters chain.
        let pw = SecretString::new("a b");
        assert_eq!(
            render("{{ password | urlencode | urlencode }}", &values(&pw, None))
                .unwrap()
                .expose(),
            "a%2520b"
        );
    }

    /// A DATABASE_URL whose password holds every printable ASCII character parses as a URL
    /// and yields the original username and password.
    #[test]
    fn database_url_round_trips_every_printable_character() {
        let printable = all_printable();
        // Also a password made only of the characters that break URLs.
        for password in [
            printable.clone(),
            "@:/?#[]%".into(),
            format!("{printable}{printable}"),
        ] {
            let pw = SecretString::new(password.clone());
            let vals = TemplateValues {
                username: "user@corp:x/y",
                password: &pw,
                host: "db.example.internal",
                port: 3306,
                dbname: Some("app"),
                engine: "mysql",
            };
            let rendered = render(URL, &vals).unwrap();
            let url = url::Url::parse(rendered.expose()).expect("DATABASE_URL parses");
            assert_eq!(url.scheme(), "postgres");
            assert_eq!(url.host_str(), Some("db.example.internal"));
            assert_eq!(url.port(), Some(3306));
            assert_eq!(url.path(), "/app");
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            assert_eq!(decode(url.username()), "user@corp:x/y");
            assert_eq!(decode(url.password().expect("has a password")), password);
        }
    }

    #[test]
    fn validate_accepts_good_templates() {
        for t in [
            URL,
            "{{password}}",
            "{{ port }}",
            "x{{engine|urlencode}}y",
            "plain text",
            "jdbc:mysql://{{host}}:{{port}}/",
        ] {
            assert_eq!(validate(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn errors_are_actionable() {
        let e = validate("{{ pasword }}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownKey {
                key: "pasword".into(),
                offset: 0,
                suggestion: Some("password")
            }
        );
        assert!(e.to_string().contains("did you mean \"password\""), "{e}");
        let e = validate("x {{ Username }}").unwrap_err();
        assert!(
            matches!(
                e,
                TemplateError::UnknownKey {
                    offset: 2,
                    suggestion: Some("username"),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            validate("{{ db_name }}"),
            Err(TemplateError::UnknownKey {
                suggestion: Some("dbname"),
                ..
            })
        ));
        assert!(matches!(
            validate("{{ certificate }}"),
            Err(TemplateError::UnknownKey {
                suggestion: None,
                ..
            })
        ));
        let e = validate("{{ password | urlencoded }}").unwrap_err();
        assert!(
            matches!(
                e,
                TemplateError::UnknownFilter {
                    suggestion: Some("urlencode"),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("known filters: urlencode"), "{e}");
        assert!(matches!(
            validate("{{ password | base64 }}"),
            Err(TemplateError::UnknownFilter {
                suggestion: None,
                ..
            })
        ));
        assert_eq!(
            validate("abc {{ password "),
            Err(TemplateError::Unclosed { offset: 4 })
        );
        assert_eq!(
            validate("{{ password {{ host }}"),
            Err(TemplateError::Unclosed { offset: 0 })
        );
        assert_eq!(validate("{{}}"), Err(TemplateError::Empty { offset: 0 }));
        assert_eq!(validate("{{   }}"), Err(TemplateError::Empty { offset: 0 }));
        assert!(matches!(
            validate("{{ | urlencode }}"),
            Err(TemplateError::Syntax { .. })
        ));
        assert!(matches!(
            validate("{{ password | }}"),
            Err(TemplateError::Syntax { .. })
        ));
        assert!(matches!(
            validate("{{ password host }}"),
            Err(TemplateError::Syntax { .. })
        ));
        // Offsets are byte offsets into the template.
        assert!(matches!(
            validate("ab{{ port }}cd{{ nope }}"),
            Err(TemplateError::UnknownKey { offset: 14, .. })
        ));
    }

    #[test]
    fn errors_never_carry_values() {
        let pw = SecretString::new("hunter2-very-secret");
        let bad = [
            "{{ password }}{{ pasword }}",
            "{{ password | urlencode }} {{ password | nope }}",
            "{{ password }} {{",
        ];
        for t in bad {
            let e = render(t, &values(&pw, Some("db"))).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
        // A long string pasted between braces is cut in the message.
        let e = validate(&format!("{{{{ {} }}}}", "x".repeat(200))).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        // The rendered value itself never prints.
        let out = render("{{ password }}", &values(&pw, None)).unwrap();
        assert_eq!(format!("{out:?}"), "<redacted>");
    }
}

//! The layer's own settings, read the way the extension reads them: a malformed value is noted
//! and replaced by its default, never fatal.

/// `true`/`false` the way the extension reads them (`1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A port from `name`, or `default` (noted) when it is malformed.
pub fn port(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: u16,
    notes: &mut Vec<String>,
) -> u16 {
    match get(name) {
        None => default,
        Some(raw) => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                notes.push(format!("{name}={raw:?} is not a port; using {default}"));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_ports() {
        for (raw, want) in [
            ("true", Some(true)),
            (" ON ", Some(true)),
            ("0", Some(false)),
            ("No", Some(false)),
            ("maybe", None),
            ("", None),
        ] {
            assert_eq!(parse_bool(raw), want, "{raw:?}");
        }
        let mut notes = Vec::new();
        let env = |k: &str| match k {
            "GOOD" => Some(" 5318 ".to_owned()),
            "ZERO" => Some("0".to_owned()),
            "BIG" => Some("70000".to_owned()),
            _ => None,
        };
        assert_eq!(port(&env, "GOOD", 4318, &mut notes), 5318);
        assert_eq!(port(&env, "UNSET", 4318, &mut notes), 4318);
        assert!(notes.is_empty());
        assert_eq!(port(&env, "ZERO", 4318, &mut notes), 4318);
        assert_eq!(port(&env, "BIG", 4318, &mut notes), 4318);
        assert_eq!(
            notes,
            [
                "ZERO=\"0\" is not a port; using 4318",
                "BIG=\"70000\" is not a port; using 4318"
            ]
        );
    }
}

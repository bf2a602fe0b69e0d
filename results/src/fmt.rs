//! Small formatting helpers shared by the text table, the page and the plots.

use sha2::{Digest, Sha256};

/// HTML/XML-escapes text for element content and double- or single-quoted attributes. Every
/// string that comes from results or the campaign goes through here: campaign names and layer
/// names are user input.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // control characters are not allowed in XML 1.0; they never carry meaning here
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A number with about four significant digits and no trailing zeros: activities range from
/// 1e-3 to 1e3 depending on the layer, angles and zoom factors are short.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor();
    if !(-3.0..6.0).contains(&mag) {
        return format!("{v:.3e}");
    }
    let decimals = (3.0 - mag).clamp(0.0, 6.0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// `num`, or "-" when there is no value.
pub fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

/// A name safe for a file name and an HTML id: layer names such as `blocks.7` or
/// `features.18` stay as they are; anything else outside [A-Za-z0-9._-] becomes `_`, with a
/// short hash of the original appended so two different layers never share a file.
pub fn slug(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !s.is_empty() && s.chars().all(safe) && !s.starts_with('.') {
        return s.to_string();
    }
    let cleaned: String = s.chars().map(|c| if safe(c) { c } else { '_' }).collect();
    let hash = hex::encode(&Sha256::digest(s.as_bytes())[..4]);
    format!("{}-{hash}", cleaned.trim_start_matches('.'))
}

/// `YYYY-MM-DD HH:MM UTC` from milliseconds since the Unix epoch.
pub fn utc_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (H. Hinnant): the proleptic Gregorian date of a day count
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(90.0), "90");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(12.3456), "12.35");
        assert_eq!(num(-0.00001), "-1.000e-5");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(opt(None), "-");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn slugs_keep_plain_layer_names_and_separate_odd_ones() {
        assert_eq!(slug("blocks.7"), "blocks.7");
        assert_eq!(slug("block3_pool"), "block3_pool");
        let odd = slug("a/b");
        assert!(odd.starts_with("a_b-") && odd != slug("a?b"));
        assert!(!slug("../x").contains('/') && !slug("..").starts_with('.'));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(1_709_210_096_000), "2024-02-29 12:34 UTC");
    }
}

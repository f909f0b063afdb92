//! BSON → extended JSON text from the tree (`Document`, `Bson`): the reference writer, every
//! BSON type in every [`Style`], written directly into one `String` (no `serde_json` tree).
//! `write_raw.rs` writes the same text from BSON bytes and calls the helpers here for what they
//! share.

use std::fmt::Write as _;

use base64::Engine as _;
use bson::{Bson, Document};

use super::Style;

/// Extended JSON text of a whole document.
pub fn document_to_string(doc: &Document, style: Style) -> String {
    let mut out = String::with_capacity(256);
    write_document(&mut out, doc, style);
    out
}

/// Extended JSON text of one value.
pub fn value_to_string(value: &Bson, style: Style) -> String {
    let mut out = String::with_capacity(32);
    write_value(&mut out, value, style);
    out
}

pub(super) fn write_str_styled(out: &mut String, s: &str, style: Style) {
    match style {
        Style::Key => write_java_str(out, s),
        Style::Strict | Style::Relaxed => write_str(out, s),
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs without anything to escape go in one copy; everything escaped is ASCII, so every cut
    // is on a character boundary.
    let mut run = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// A string as the MongoDB Java driver writes it: short escapes for `"`, `\\` and the five
/// usual controls, the UTF-16 unit itself for letters, digits, punctuation, symbols and spaces,
/// and `\uXXXX` (lower-case hex) for every other unit, surrogates included.
fn write_java_str(out: &mut String, s: &str) {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.len_utf16() == 2 => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => match get_general_category(c) {
                G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::OtherLetter
                | G::DecimalNumber
                | G::LetterNumber
                | G::OtherNumber
                | G::SpaceSeparator
                | G::ConnectorPunctuation
                | G::DashPunctuation
                | G::OpenPunctuation
                | G::ClosePunctuation
                | G::InitialPunctuation
                | G::FinalPunctuation
                | G::OtherPunctuation
                | G::MathSymbol
                | G::CurrencySymbol
                | G::ModifierSymbol
                | G::OtherSymbol => out.push(c),
                _ => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
            },
        }
    }
    out.push('"');
}

pub(super) fn write_document(out: &mut String, doc: &Document, style: Style) {
    out.push('{');
    for (i, (key, value)) in doc.iter().enumerate() {
        if i > 0 {
            out.push_str(style.separator());
        }
        write_str_styled(out, key, style);
        out.push_str(": ");
        write_value(out, value, style);
    }
    out.push('}');
}

fn write_double(out: &mut String, v: f64) {
    if v.is_nan() {
        // The sign of a NaN is not kept: readers only know "NaN".
        out.push_str(r#"{"$numberDouble": "NaN"}"#);
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { r#"{"$numberDouble": "Infinity"}"# } else { r#"{"$numberDouble": "-Infinity"}"# });
    } else {
        // serde_json writes the shortest text that reads back as the same f64, and always with
        // a `.` or an exponent, so a reader never mistakes it for an integer.
        match serde_json::Number::from_f64(v) {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str("0.0"),
        }
    }
}

/// A finite double as Java's `Double.toString` writes it (shortest digits that read back):
/// plain between 10^-3 and 10^7 (`2.0`, `0.001`), otherwise `d.dddE<n>` (`1.0E21`, `1.5E-7`).
fn write_java_double(out: &mut String, v: f64) {
    if !v.is_finite() {
        return write_double(out, v);
    }
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` gives the same shortest digits: "1.5e-7", "1e21".
    let sci = format!("{:e}", v.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if v < 0.0 {
        out.push('-');
    }
    if (-3..7).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent as usize + 1;
            let padded = format!("{digits:0<int_len$}");
            let (int, frac) = padded.split_at(int_len);
            out.push_str(int);
            out.push('.');
            out.push_str(if frac.is_empty() { "0" } else { frac });
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exponent - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let _ = write!(out, "{first}.{}E{exponent}", if rest.is_empty() { "0" } else { rest });
    }
}

/// A date as Java's `ISO_OFFSET_DATE_TIME` writes it in UTC: seconds always, the fraction
/// only when not zero and without trailing zeros (`…:05Z`, `…:05.12Z`).
fn write_java_iso(out: &mut String, ms: i64) -> bool {
    let Ok(iso) = bson::DateTime::from_millis(ms - ms.rem_euclid(1000)).try_to_rfc3339_string() else {
        return false;
    };
    let Some(seconds) = iso.get(..19) else { return false };
    out.push_str(r#"{"$date": ""#);
    out.push_str(seconds);
    let millis = ms.rem_euclid(1000);
    if millis != 0 {
        let fraction = format!("{millis:03}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str(r#"Z"}"#);
    true
}

pub(super) fn write_double_styled(out: &mut String, v: f64, style: Style) {
    match style {
        Style::Key => write_java_double(out, v),
        Style::Strict | Style::Relaxed => write_double(out, v),
    }
}

pub(super) fn write_int64(out: &mut String, v: i64, style: Style) {
    match style {
        Style::Strict => {
            let _ = write!(out, r#"{{"$numberLong": "{v}"}}"#);
        }
        Style::Relaxed | Style::Key => {
            let _ = write!(out, "{v}");
        }
    }
}

pub(super) fn write_object_id(out: &mut String, oid: &bson::oid::ObjectId) {
    let _ = write!(out, r#"{{"$oid": "{}"}}"#, oid.to_hex());
}

pub(super) fn write_date_time(out: &mut String, dt: bson::DateTime, style: Style) {
    let ms = dt.timestamp_millis();
    // Relaxed ISO text exists only for years 1970 to 9999.
    const LAST_ISO_MS: i64 = 253_402_300_799_999;
    if style == Style::Key {
        if !((0..=LAST_ISO_MS).contains(&ms) && write_java_iso(out, ms)) {
            let _ = write!(out, r#"{{"$date": {{"$numberLong": "{ms}"}}}}"#);
        }
        return;
    }
    match (style, dt.try_to_rfc3339_string()) {
        (Style::Relaxed, Ok(iso)) if (0..=LAST_ISO_MS).contains(&ms) => {
            out.push_str(r#"{"$date": "#);
            write_str(out, &iso);
            out.push('}');
        }
        (Style::Relaxed, _) => {
            let _ = write!(out, r#"{{"$date": {{"$numberLong": "{ms}"}}}}"#);
        }
        (Style::Strict | Style::Key, _) => {
            let _ = write!(out, r#"{{"$date": {ms}}}"#);
        }
    }
}

pub(super) fn write_value(out: &mut String, value: &Bson, style: Style) {
    match value {
        Bson::Double(v) => write_double_styled(out, *v, style),
        Bson::String(s) => write_str_styled(out, s, style),
        Bson::Document(d) => write_document(out, d, style),
        Bson::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.separator());
                }
                write_value(out, item, style);
            }
            out.push(']');
        }
        Bson::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Bson::Null => out.push_str("null"),
        Bson::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        Bson::Int64(v) => write_int64(out, *v, style),
        Bson::DateTime(dt) => write_date_time(out, *dt, style),
        Bson::ObjectId(oid) => write_object_id(out, oid),
        Bson::Binary(bin) => {
            let subtype: u8 = bin.subtype.into();
            out.push_str(r#"{"$binary": {"base64": ""#);
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(&bin.bytes));
            let _ = match style {
                Style::Key => write!(out, r#"","subType": "{subtype:02X}"}}}}"#),
                Style::Strict | Style::Relaxed => write!(out, r#"", "subType": "{subtype:02x}"}}}}"#),
            };
        }
        Bson::RegularExpression(re) => {
            out.push_str(r#"{"$regularExpression": {"pattern": "#);
            write_str_styled(out, &re.pattern, style);
            out.push_str(style.separator());
            out.push_str(r#""options": "#);
            write_str_styled(out, &re.options, style);
            out.push_str("}}");
        }
        Bson::Timestamp(ts) => {
            let sep = style.separator();
            let _ = write!(out, r#"{{"$timestamp": {{"t": {}{sep}"i": {}}}}}"#, ts.time, ts.increment);
        }
        Bson::Decimal128(d) => {
            let _ = write!(out, r#"{{"$numberDecimal": "{d}"}}"#);
        }
        Bson::MinKey => out.push_str(r#"{"$minKey": 1}"#),
        Bson::MaxKey => out.push_str(r#"{"$maxKey": 1}"#),
        Bson::Undefined => out.push_str(r#"{"$undefined": true}"#),
        Bson::Symbol(s) => {
            out.push_str(r#"{"$symbol": "#);
            write_str_styled(out, s, style);
            out.push('}');
        }
        Bson::JavaScriptCode(code) => {
            out.push_str(r#"{"$code": "#);
            write_str_styled(out, code, style);
            out.push('}');
        }
        Bson::JavaScriptCodeWithScope(cws) => {
            out.push_str(r#"{"$code": "#);
            write_str_styled(out, &cws.code, style);
            out.push_str(style.separator());
            out.push_str(r#""$scope": "#);
            write_document(out, &cws.scope, style);
            out.push('}');
        }
        Bson::DbPointer(_) => {
            // The bson crate keeps DBPointer's fields private; its own writer knows them.
            out.push_str(&value.clone().into_canonical_extjson().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extjson::document_from_str;
    use bson::spec::BinarySubtype;

    #[test]
    fn strings_escape_what_json_needs_and_keep_the_rest() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\re\tf\u{1}\u{1f}g é 😀\u{7f}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001\\u001fg é 😀\u{7f}\"");
        let back: String = serde_json::from_str(&out).expect("JSON");
        assert_eq!(back, "a\"b\\c\nd\re\tf\u{1}\u{1f}g é 😀\u{7f}");
    }
    use bson::{doc, oid::ObjectId, Binary, DateTime, Decimal128, Regex, Timestamp};

    #[test]
    fn strict_keeps_numeric_types() {
        let doc = doc! {"i": 1_i32, "l": 1_i64, "d": 1.0_f64, "big": 1e21_f64, "neg0": -0.0_f64};
        let text = document_to_string(&doc, Style::Strict);
        assert_eq!(text, r#"{"i": 1, "l": {"$numberLong": "1"}, "d": 1.0, "big": 1e+21, "neg0": -0.0}"#);
        let back = document_from_str(&text).expect("reads back");
        assert_eq!(bson::to_vec(&back).ok(), bson::to_vec(&doc).ok());
    }

    #[test]
    fn relaxed_is_plain_json() {
        let doc = doc! {"l": 5_i64, "when": DateTime::from_millis(1_700_000_000_123)};
        assert_eq!(
            document_to_string(&doc, Style::Relaxed),
            r#"{"l": 5, "when": {"$date": "2023-11-14T22:13:20.123Z"}}"#
        );
    }

    #[test]
    fn every_type_round_trips_in_strict() {
        let oid = ObjectId::parse_str("596e275826f08b2730779e1f").expect("oid");
        let doc = doc! {
            "_id": oid,
            "s": "quote \" backslash \\ newline \n tab \t nul \u{0} é 🎉",
            "dec": Decimal128::from_bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x30]),
            "date": DateTime::from_millis(-62_135_596_800_001),
            "ts": Timestamp { time: 1_700_000_000, increment: 7 },
            "bin": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xAB; 16] },
            "udef": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![1, 2, 3] },
            "re": Regex { pattern: "^a.*b$".into(), options: "imx".into() },
            "min": Bson::MinKey, "max": Bson::MaxKey, "undef": Bson::Undefined, "nul": Bson::Null,
            "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY,
            "nested": {"a": [1_i32, 2_i64, [3.5_f64, {"z": true}]], "b": {}},
            "code": Bson::JavaScriptCode("function() {}".into()),
            "sym": Bson::Symbol("sym".into()),
        };
        let text = document_to_string(&doc, Style::Strict);
        let back = document_from_str(&text).expect("reads back");
        assert_eq!(bson::to_vec(&back).ok(), bson::to_vec(&doc).ok(), "{text}");
    }
}
